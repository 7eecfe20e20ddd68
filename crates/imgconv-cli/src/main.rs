//! imgconv: the command-line front end. It parses arguments, drives imgconv-core and
//! prints; all the work is in the library.

fn main() {
    eprintln!("imgconv: not yet: the convert pipeline is being built (see README)");
    std::process::exit(2);
}
