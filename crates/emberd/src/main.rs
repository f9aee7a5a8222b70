//! `emberd`: the ember daemon and command-line tool.
//!
//! Subcommands are a contract other programs call (see the README): `info`, `tokenize`,
//! `detokenize`, `template`, `run`, `bench`, `serve`. Every failure is one line on stderr and exit code 2; nothing from
//! outside may make it panic.

mod backend;
mod cmd;
mod fetch;
mod model;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "emberd", version, about = "Run quantized LLMs on small boards", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a GGUF model: architecture, parameters, quant types, context, template, vocabulary.
    Info(cmd::info::InfoArgs),
    /// Read UTF-8 text on stdin, print its token ids as a JSON array (no BOS).
    Tokenize(cmd::text::TokenizeArgs),
    /// Generate a continuation of a prompt (or a chat answer with --chat).
    Run(Box<cmd::run::RunArgs>),
    /// Measure prefill and decode speed (llama-bench style), load time, peak RSS, roofline.
    Bench(Box<cmd::bench::BenchArgs>),
    /// Read a JSON array of token ids on stdin, print the text.
    Detokenize(cmd::text::DetokenizeArgs),
    /// Read `{"messages":[...],"add_generation_prompt":true}` on stdin, print the rendered prompt.
    Template(cmd::text::TemplateArgs),
    /// Run the daemon: HTTP API (OpenAI- and Ollama-compatible) on a Unix socket.
    Serve(Box<serve::ServeArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        init_tracing("warn", false);
    }
    let result = match cli.command {
        Command::Info(a) => cmd::info::run(&a),
        Command::Run(a) => cmd::run::run(&a),
        Command::Bench(a) => cmd::bench::run(&a),
        Command::Tokenize(a) => cmd::text::tokenize(&a),
        Command::Detokenize(a) => cmd::text::detokenize(&a),
        Command::Template(a) => cmd::text::template(&a),
        Command::Serve(a) => serve::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole cause chain, joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("emberd: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr (stdout carries results); `EMBER_LOG` sets the filter (default `level`:
/// `warn` for the CLI commands, `info` for the daemon, whose one line per request is info).
/// `json`: one JSON object per line, for log collectors.
pub(crate) fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EMBER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
