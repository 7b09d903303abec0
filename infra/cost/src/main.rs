//! `cargo run -q -p cost -- [flags]`: the monthly AWS bill of a workload, as Markdown (or
//! `--json`). Every flag's default is the reference workload; `--help` lists them.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

#[derive(Parser)]
#[command(about = "Monthly AWS cost of the paper-trading backend at us-east-1 list prices")]
struct Cli {
    #[command(flatten)]
    workload: cost::Workload,
    /// Print JSON (money and quantities as strings) instead of Markdown.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cost::estimate(&cli.workload, &cost::Prices::default()) {
        Ok(report) => report,
        // A bad value is a usage error, reported like clap's own.
        Err(invalid) => Cli::command()
            .error(ErrorKind::ValueValidation, invalid)
            .exit(),
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&cost::render::json(&report))?
        );
    } else {
        print!("{}", cost::render::markdown(&report));
    }
    Ok(())
}
