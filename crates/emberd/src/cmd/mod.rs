//! The subcommands.

pub mod bench;
pub mod info;
pub mod run;
pub mod text;
