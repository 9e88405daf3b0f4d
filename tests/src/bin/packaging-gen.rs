//! Rewrites the generated packaging files (see `clustermgr_tests::packaging`) after a
//! version bump or an edit of the bootstrap agent unit, and the README's exit-code
//! table after an edit of `controller/src/exit.rs`.

fn main() -> std::io::Result<()> {
    let root = clustermgr_tests::packaging::workspace_root();
    for (path, text) in clustermgr_tests::packaging::generated(&root) {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
