//! Compiles the Divolte shop schema into the `avro_decode` target when it is present beside the
//! repository (`../shared/divolte-shop/ShopEventRecord.avsc`, or the file named by
//! `TOP_PICK_SHOP_SCHEMA`). It is read at build time only and never copied into the repository.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=TOP_PICK_SHOP_SCHEMA");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let path = std::env::var_os("TOP_PICK_SHOP_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../shared/divolte-shop/ShopEventRecord.avsc"));
    let text = std::fs::read_to_string(&path).ok();
    if text.is_some() {
        println!("cargo::rerun-if-changed={}", path.display());
    } else {
        // A missing file cannot be watched without rebuilding every time: add the schema
        // later with `touch fuzz/build.rs` (or set TOP_PICK_SHOP_SCHEMA).
        println!("cargo::rerun-if-changed=build.rs");
        println!(
            "cargo::warning=no Divolte shop schema at {}: avro_decode fuzzes the built-in schema only",
            path.display()
        );
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("shop_schema.rs");
    let code = format!(
        "/// The Divolte shop schema, when it was present at build time.\npub const SHOP_SCHEMA: Option<&str> = {};\n",
        match text {
            Some(t) => format!("Some({t:?})"),
            None => "None".to_string(),
        }
    );
    std::fs::write(out, code).expect("write OUT_DIR/shop_schema.rs");
}
