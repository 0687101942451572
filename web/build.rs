//! Builds the web console (`web/ui/`, Preact + Vite) with npm and embeds it.
//!
//! * `npm ci` runs only when `web/ui/node_modules` is missing or
//!   `package-lock.json` changed since the last install (a copy of the lock
//!   is kept in `node_modules/.postern-lock`).
//! * `npm run build` writes into `$OUT_DIR/ui-dist`; every file there becomes
//!   an entry of the `ASSETS` table in `$OUT_DIR/ui_assets.rs`
//!   (`include_bytes!`), served by `src/ui.rs`.
//! * Cargo reruns this script only when the UI's sources, lockfile, page or
//!   Vite configuration change, so `cargo build` stays fast otherwise.
//!
//! Without npm on the PATH the build fails with a message saying what to install.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ui = manifest.join("ui");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    // Only existing paths: Cargo reruns the script every time for a missing one.
    for p in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.js",
    ] {
        let path = ui.join(p);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=POSTERN_NPM");

    let npm = std::env::var("POSTERN_NPM").unwrap_or_else(|_| "npm".to_owned());
    match Command::new(&npm).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => fail(&format!(
            "`{npm}` was not found or does not run. Building Postern's web console needs Node.js (v20 or \
             newer) and npm on the PATH: on Debian/Ubuntu `apt-get install nodejs npm`. (Set POSTERN_NPM to \
             use another npm binary.)"
        )),
    }

    let lock = std::fs::read(ui.join("package-lock.json"))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", ui.join("package-lock.json").display())));
    let stamp = ui.join("node_modules").join(".postern-lock");
    let installed = std::fs::read(&stamp).ok();
    if installed.as_deref() != Some(lock.as_slice()) {
        run(
            Command::new(&npm)
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&ui),
            "npm ci",
        );
        std::fs::write(&stamp, &lock).unwrap_or_else(|e| fail(&format!("{}: {e}", stamp.display())));
    }

    let dist = out.join("ui-dist");
    run(
        Command::new(&npm)
            .args(["run", "build", "--silent", "--", "--outDir"])
            .arg(&dist)
            .args(["--emptyOutDir", "--logLevel", "warn"])
            .current_dir(&ui),
        "npm run build",
    );

    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    if !files.iter().any(|(url, _)| url == "/index.html") {
        fail("the UI build produced no index.html");
    }
    let mut table = String::from("static ASSETS: &[Asset] = &[\n");
    for (url, path) in &files {
        let _ = writeln!(
            table,
            "    Asset {{ path: {url:?}, content_type: {:?}, body: include_bytes!({:?}) }},",
            content_type(url),
            path.display().to_string()
        );
    }
    table.push_str("];\n");
    std::fs::write(out.join("ui_assets.rs"), table).unwrap_or_else(|e| fail(&format!("writing ui_assets.rs: {e}")));
}

fn fail(msg: &str) -> ! {
    eprintln!("error: building the web console: {msg}");
    panic!("building the web console: {msg}");
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("`{what}` in web/ui failed ({s}); see its output above")),
        Err(e) => fail(&format!("`{what}` could not start: {e}")),
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("below root");
            let url = format!(
                "/{}",
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            );
            out.push((url, path));
        }
    }
}

fn content_type(url: &str) -> &'static str {
    let ext = url.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
