//! The subcommands.

pub mod info;
pub mod text;
