//! The `flowprint` command: argument parsing and printing only; the work is in the library.

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(code) => code,
        Err(e) => {
            if cli::is_broken_pipe(&e) {
                0
            } else {
                eprintln!("flowprint: {e:#}");
                2
            }
        }
    };
    std::process::exit(code);
}
