"""What the hub scripts ask for: Home Assistant-like tools and an AI Task answer schema, bounded
(enums, lengths, item counts, no extra properties) so that a random-weight model's constrained
output finishes inside `max_tokens`."""

TOOLS = [
    {"type": "function", "function": {
        "name": "HassTurnOn", "description": "Turns on/opens a device or entity",
        "parameters": {"type": "object", "properties": {
            "name": {"type": "string", "enum": ["Kitchen Light", "Fan"]},
            "domain": {"type": "array", "items": {"type": "string", "enum": ["light", "fan"]},
                       "maxItems": 2}},
            "required": ["name"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "HassLightSet", "description": "Sets the brightness of a light",
        "parameters": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 20},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["name", "brightness"], "additionalProperties": False}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ANSWER = {"type": "object", "properties": {
    "summary": {"type": "string", "maxLength": 30},
    "rooms": {"type": "array", "items": {"type": "string", "enum": ["kitchen", "hall"]},
              "minItems": 1, "maxItems": 2}},
    "required": ["summary", "rooms"], "additionalProperties": False}
