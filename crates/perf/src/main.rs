use clap::Parser;
use warren_perf::options::Options;
use warren_perf::run;

fn main() -> std::process::ExitCode {
    let opts = Options::parse();
    let runtime = match opts.threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("warren-perf: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(opts.clone())) {
        Ok(summary) if opts.json => {
            println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Ok(summary) => {
            run::print_summary(&opts, &summary);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-perf: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
