//! `kz`: a thin command-line layer. It parses flags, calls engine operations, prints through one
//! output layer ([`output::Shell`]) and exits with the documented code.

mod backend;
mod cli;
mod commands;
mod lab;
mod output;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let shell = output::Shell::new(cli.ascii, cli.color);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            shell.error(&format!("cannot start the async runtime: {e}"));
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(commands::run(cli, shell));
    // Do not wait for lingering blocking tasks (a pending stdin read) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}
