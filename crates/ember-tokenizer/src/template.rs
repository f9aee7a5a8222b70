//! Chat templates (minijinja). Being written.
