//! Writes the InsurerIntegration CRD generated from the Rust types: to `crds/insurerintegration.yaml`
//! (the checked-in copy a test compares against), or to stdout with `-`.

fn main() -> std::io::Result<()> {
    let yaml = crds::crd_yaml();
    match std::env::args().nth(1).as_deref() {
        Some("-") => print!("{yaml}"),
        Some(path) => std::fs::write(path, yaml)?,
        None => std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/insurerintegration.yaml"), yaml)?,
    }
    Ok(())
}
