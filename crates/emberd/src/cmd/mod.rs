//! The subcommands.

pub mod info;
pub mod run;
pub mod text;
