//! `cargo run -p verimail-mail --example classify -- FILE…`: what the classifier makes of each
//! message (class, reason, status, recipient, diagnostic), for reading a bounce by hand.

#[allow(clippy::print_stdout, reason = "the example's output")]
fn main() -> std::io::Result<()> {
    for file in std::env::args().skip(1) {
        let raw = std::fs::read(&file)?;
        let verdict = verimail_mail::bounce::classify::classify(&raw);
        println!("{file}: {verdict:#?}");
    }
    Ok(())
}
