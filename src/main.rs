//! The `flowprint` command: argument parsing and printing only; the work is in the library.

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(code) => code,
        Err(e) => {
            if cli::is_broken_pipe(&e) {
                0
            } else {
                // The error may quote input (a file name, a field): no control characters.
                let e = format!("{e:#}");
                eprintln!("flowprint: {}", flowprint::text::printable_lines(&e));
                2
            }
        }
    };
    std::process::exit(code);
}
