//! Sample messages and their postcard bytes, shared by the test files.
//!
//! The byte arrays were written out by hand from postcard's specification
//! (<https://postcard.jamesmunns.com/wire-format>): u8 as one raw byte; u32/u64/usize as LEB128
//! varints; i32 zigzagged then varint; f32 as 4 little-endian bytes; bool as 0/1; Option as a 0/1
//! tag then the value; str and sequences as a varint length then the contents; enums as a varint
//! variant index then the fields. Changing them is a wire-version change.
#![allow(dead_code)]

use ember_proto::{ErrorCode, FinishReason, Timings, Usage, fixed};

pub const REQUEST_BYTES: &[u8] = &[
    0x02, // v = 2
    0x01, 0x02, b'r', b'1', // id: Some("r1")
    0x01, 0x05, b'h', b'u', b'b', b'/', b'r', // reply_to: Some("hub/r")
    0x00, // model: None
    0x01, // messages: 1 element
    0x04, b'u', b's', b'e', b'r', // role "user"
    0x02, b'h', b'i', // content "hi"
    0x00, // tool_calls: 0 elements
    0x00, // tool_call_id: None
    0x00, // prompt: None
    0x01, 0xAC, 0x02, // max_tokens: Some(300) = varint AC 02
    0x01, 0x00, 0x00, 0x00, 0x3F, // temperature: Some(0.5) = 0x3F000000 LE
    0x01, 0x03, // top_k: Some(-2), zigzag 3
    0x00, // top_p: None
    0x00, // min_p: None
    0x01, 0x2A, // seed: Some(42)
    0x01, 0x01, b'\n', // stop: ["\n"]
    0x00,  // repeat_penalty: None
    0x00,  // presence_penalty: None
    0x00,  // frequency_penalty: None
    0x01,  // stream: true
    0x01, 0x04, b'n', b'o', b'n', b'e', // reasoning_format: Some("none")
    0x00, // response_format: None
    0x00, // tools: 0 elements
    0x00, // tool_choice: None
    0x00, // parallel_tool_calls: None
];

/// A request with every tool field: a call and its result in the history, a tool, a named
/// choice, a response format.
pub const TOOL_REQUEST_BYTES: &[u8] = &[
    0x02, // v = 2
    0x00, 0x00, 0x00, // id, reply_to, model: None
    0x03, // messages: 3 elements
    0x04, b'u', b's', b'e', b'r', 0x03, b'o', b'n', b'?', 0x00, 0x00, // user "on?"
    0x09, b'a', b's', b's', b'i', b's', b't', b'a', b'n', b't', 0x00, // assistant ""
    0x01, // tool_calls: 1 element
    0x02, b'c', b'1', 0x02, b'o', b'n', 0x02, b'{',
    b'}', // id "c1", name "on", arguments "{}"
    0x00, // tool_call_id: None
    0x04, b't', b'o', b'o', b'l', 0x02, b'o', b'k', 0x00, // tool "ok", no calls
    0x01, 0x02, b'c', b'1', // tool_call_id: Some("c1")
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // prompt … seed: None
    0x00, // stop: 0 elements
    0x00, 0x00, 0x00, // penalties: None
    0x00, // stream: false
    0x00, // reasoning_format: None
    0x01, 0x01, 0x02, b'{', b'}', // response_format: Some(JsonSchema("{}"))
    0x01, // tools: 1 element
    0x02, b'o', b'n', // name "on"
    0x01, 0x01, b'x', // description: Some("x")
    0x01, 0x02, b'{', b'}', // parameters: Some("{}")
    0x01, 0x03, 0x02, b'o', b'n', // tool_choice: Some(Function("on"))
    0x01, 0x00, // parallel_tool_calls: Some(false)
];

pub const CHUNK_BYTES: &[u8] = &[
    0x02, // wire version
    0x00, // Response::Chunk
    0x01, 0x02, b'r', b'1', // id: Some("r1")
    0x03, // seq: 3
    0x03, b'H', 0xC3, 0xA9, // delta: "Hé" (3 UTF-8 bytes)
    0x00, // reasoning: None
];

pub const FINAL_BYTES: &[u8] = &[
    0x02, // wire version
    0x01, // Response::Final
    0x00, // id: None
    0x02, b'o', b'k', // text: "ok"
    0x01, 0x02, b'h', b'm', // reasoning: Some("hm")
    0x00, // tool_calls: 0 elements
    0x01, // finish_reason: Length
    0x0A, // usage.prompt_tokens: 10
    0xC8, 0x01, // usage.completion_tokens: 200
    0xD2, 0x01, // usage.total_tokens: 210
    0x00, // usage.cached_tokens: 0
    0x00, 0x00, 0xC0, 0x3F, // timings.queued_ms: 1.5 = 0x3FC00000
    0x0A, // timings.prompt_n: 10
    0x00, 0x00, 0x00, 0x40, // timings.prompt_ms: 2.0 = 0x40000000
    0xC8, 0x01, // timings.predicted_n: 200
    0x00, 0x00, 0x7A, 0x44, // timings.predicted_ms: 1000.0 = 0x447A0000
];

/// A final reply with one tool call.
pub const TOOL_FINAL_BYTES: &[u8] = &[
    0x02, // wire version
    0x01, // Response::Final
    0x00, // id: None
    0x00, // text: ""
    0x00, // reasoning: None
    0x01, // tool_calls: 1 element
    0x02, b'c', b'1', 0x02, b'o', b'n', 0x02, b'{',
    b'}', // id "c1", name "on", arguments "{}"
    0x02, // finish_reason: ToolCalls
    0x0A, 0xC8, 0x01, 0xD2, 0x01, 0x00, // usage
    0x00, 0x00, 0xC0, 0x3F, 0x0A, 0x00, 0x00, 0x00, 0x40, 0xC8, 0x01, 0x00, 0x00, 0x7A,
    0x44, // timings
];

pub const ERROR_BYTES: &[u8] = &[
    0x02, // wire version
    0x02, // Response::Error
    0x01, 0x02, b'r', b'1', // id: Some("r1")
    0x04, // code: Busy (index 4)
    0x04, b'f', b'u', b'l', b'l', // message: "full"
];

// Wire version 1 (no tool fields), as a client built before version 2 sends and reads it.

pub const V1_REQUEST_BYTES: &[u8] = &[
    0x01, // v = 1
    0x01, 0x02, b'r', b'1', // id: Some("r1")
    0x01, 0x05, b'h', b'u', b'b', b'/', b'r', // reply_to: Some("hub/r")
    0x00, // model: None
    0x01, // messages: 1 element
    0x04, b'u', b's', b'e', b'r', // role "user"
    0x02, b'h', b'i', // content "hi"
    0x00, // prompt: None
    0x01, 0xAC, 0x02, // max_tokens: Some(300) = varint AC 02
    0x01, 0x00, 0x00, 0x00, 0x3F, // temperature: Some(0.5) = 0x3F000000 LE
    0x01, 0x03, // top_k: Some(-2), zigzag 3
    0x00, // top_p: None
    0x00, // min_p: None
    0x01, 0x2A, // seed: Some(42)
    0x01, 0x01, b'\n', // stop: ["\n"]
    0x00,  // repeat_penalty: None
    0x00,  // presence_penalty: None
    0x00,  // frequency_penalty: None
    0x01,  // stream: true
    0x01, 0x04, b'n', b'o', b'n', b'e', // reasoning_format: Some("none")
];

pub const V1_CHUNK_BYTES: &[u8] = &[
    0x01, // wire version
    0x00, // Response::Chunk
    0x01, 0x02, b'r', b'1', // id: Some("r1")
    0x03, // seq: 3
    0x03, b'H', 0xC3, 0xA9, // delta: "Hé" (3 UTF-8 bytes)
    0x00, // reasoning: None
];

pub const V1_FINAL_BYTES: &[u8] = &[
    0x01, // wire version
    0x01, // Response::Final
    0x00, // id: None
    0x02, b'o', b'k', // text: "ok"
    0x01, 0x02, b'h', b'm', // reasoning: Some("hm")
    0x01, // finish_reason: Length
    0x0A, // usage.prompt_tokens: 10
    0xC8, 0x01, // usage.completion_tokens: 200
    0xD2, 0x01, // usage.total_tokens: 210
    0x00, // usage.cached_tokens: 0
    0x00, 0x00, 0xC0, 0x3F, // timings.queued_ms: 1.5 = 0x3FC00000
    0x0A, // timings.prompt_n: 10
    0x00, 0x00, 0x00, 0x40, // timings.prompt_ms: 2.0 = 0x40000000
    0xC8, 0x01, // timings.predicted_n: 200
    0x00, 0x00, 0x7A, 0x44, // timings.predicted_ms: 1000.0 = 0x447A0000
];

pub const V1_ERROR_BYTES: &[u8] = &[
    0x01, // wire version
    0x02, // Response::Error
    0x01, 0x02, b'r', b'1', // id: Some("r1")
    0x04, // code: Busy (index 4)
    0x04, b'f', b'u', b'l', b'l', // message: "full"
];

pub fn usage() -> Usage {
    Usage {
        prompt_tokens: 10,
        completion_tokens: 200,
        total_tokens: 210,
        cached_tokens: 0,
    }
}

pub fn timings() -> Timings {
    Timings {
        queued_ms: 1.5,
        prompt_n: 10,
        prompt_ms: 2.0,
        predicted_n: 200,
        predicted_ms: 1000.0,
    }
}

pub fn fixed_request() -> fixed::Request<'static, 2> {
    let mut messages = heapless::Vec::new();
    messages
        .push(fixed::Message::new("user", "hi"))
        .expect("capacity 2");
    let mut stop = heapless::Vec::new();
    stop.push("\n").expect("capacity 4");
    fixed::Request {
        id: Some("r1"),
        reply_to: Some("hub/r"),
        messages,
        max_tokens: Some(300),
        temperature: Some(0.5),
        top_k: Some(-2),
        seed: Some(42),
        stop,
        stream: true,
        reasoning_format: Some("none"),
        ..fixed::Request::default()
    }
}

pub fn fixed_chunk() -> fixed::Response<'static> {
    fixed::Response::Chunk(fixed::Chunk {
        id: Some("r1"),
        seq: 3,
        delta: "Hé",
        reasoning: None,
    })
}

pub fn fixed_final() -> fixed::Response<'static> {
    fixed::Response::Final(fixed::Final {
        id: None,
        text: "ok",
        reasoning: Some("hm"),
        tool_calls: heapless::Vec::new(),
        finish_reason: FinishReason::Length,
        usage: usage(),
        timings: timings(),
    })
}

pub const FIXED_CALL: fixed::ToolCall<'static> = fixed::ToolCall {
    id: "c1",
    name: "on",
    arguments: "{}",
};

pub fn fixed_tool_request() -> fixed::Request<'static, 3> {
    let mut messages = heapless::Vec::new();
    let mut assistant = fixed::Message::new("assistant", "");
    assistant.tool_calls.push(FIXED_CALL).expect("capacity");
    let mut tool = fixed::Message::new("tool", "ok");
    tool.tool_call_id = Some("c1");
    for m in [fixed::Message::new("user", "on?"), assistant, tool] {
        messages.push(m).expect("capacity 3");
    }
    let mut tools = heapless::Vec::new();
    tools
        .push(fixed::Tool {
            name: "on",
            description: Some("x"),
            parameters: Some("{}"),
        })
        .expect("capacity");
    fixed::Request {
        messages,
        response_format: Some(fixed::ResponseFormat::JsonSchema("{}")),
        tools,
        tool_choice: Some(fixed::ToolChoice::Function("on")),
        parallel_tool_calls: Some(false),
        ..fixed::Request::default()
    }
}

pub fn fixed_tool_final() -> fixed::Response<'static> {
    let mut tool_calls = heapless::Vec::new();
    tool_calls.push(FIXED_CALL).expect("capacity");
    fixed::Response::Final(fixed::Final {
        id: None,
        text: "",
        reasoning: None,
        tool_calls,
        finish_reason: FinishReason::ToolCalls,
        usage: usage(),
        timings: timings(),
    })
}

pub fn fixed_error() -> fixed::Response<'static> {
    fixed::Response::Error(fixed::ErrorReply {
        id: Some("r1"),
        code: ErrorCode::Busy,
        message: "full",
    })
}

#[cfg(feature = "alloc")]
pub mod owned {
    use ember_proto::{
        Chunk, ErrorCode, ErrorReply, Final, FinishReason, Message, Request, Response,
        ResponseFormat, Tool, ToolCall, ToolChoice,
    };

    pub fn request() -> Request {
        Request {
            id: Some("r1".into()),
            reply_to: Some("hub/r".into()),
            messages: vec![Message::new("user", "hi")],
            max_tokens: Some(300),
            temperature: Some(0.5),
            top_k: Some(-2),
            seed: Some(42),
            stop: vec!["\n".into()],
            stream: true,
            reasoning_format: Some("none".into()),
            ..Request::default()
        }
    }

    pub fn chunk() -> Response {
        Response::Chunk(Chunk {
            id: Some("r1".into()),
            seq: 3,
            delta: "Hé".into(),
            reasoning: None,
        })
    }

    pub fn final_() -> Response {
        Response::Final(Final {
            id: None,
            text: "ok".into(),
            reasoning: Some("hm".into()),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Length,
            usage: super::usage(),
            timings: super::timings(),
        })
    }

    pub fn call() -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: "on".into(),
            arguments: "{}".into(),
        }
    }

    pub fn tool_request() -> Request {
        let mut assistant = Message::new("assistant", "");
        assistant.tool_calls.push(call());
        let mut tool = Message::new("tool", "ok");
        tool.tool_call_id = Some("c1".into());
        Request {
            messages: vec![Message::new("user", "on?"), assistant, tool],
            response_format: Some(ResponseFormat::JsonSchema("{}".into())),
            tools: vec![Tool {
                name: "on".into(),
                description: Some("x".into()),
                parameters: Some("{}".into()),
            }],
            tool_choice: Some(ToolChoice::Function("on".into())),
            parallel_tool_calls: Some(false),
            ..Request::default()
        }
    }

    pub fn tool_final() -> Response {
        Response::Final(Final {
            id: None,
            text: String::new(),
            reasoning: None,
            tool_calls: vec![call()],
            finish_reason: FinishReason::ToolCalls,
            usage: super::usage(),
            timings: super::timings(),
        })
    }

    pub fn error() -> Response {
        Response::Error(ErrorReply {
            id: Some("r1".into()),
            code: ErrorCode::Busy,
            message: "full".into(),
        })
    }

    /// (name, value, golden bytes) for every response sample.
    pub fn responses() -> Vec<(&'static str, Response, &'static [u8])> {
        vec![
            ("chunk", chunk(), super::CHUNK_BYTES),
            ("final", final_(), super::FINAL_BYTES),
            ("tool final", tool_final(), super::TOOL_FINAL_BYTES),
            ("error", error(), super::ERROR_BYTES),
        ]
    }
}

/// A small deterministic PRNG (xorshift64*) for garbage inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
