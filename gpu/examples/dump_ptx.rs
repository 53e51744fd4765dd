//! Compiles every kernel module with NVRTC (no GPU needed) and writes the PTX to a folder,
//! for `ptxas -arch=sm_90 -v` (registers, spills) or reading:
//!   cargo run -p v3lab-gpu --example dump_ptx -- OUT_DIR [compute_90]

fn main() {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "ptx".into()));
    let arch: &'static str = Box::leak(args.next().unwrap_or_else(|| "compute_90".into()).into_boxed_str());
    if !v3lab_gpu::nvrtc_present() {
        eprintln!("NVRTC (libnvrtc) not found: put it on LD_LIBRARY_PATH");
        std::process::exit(1);
    }
    std::fs::create_dir_all(&out).expect("output folder");
    match v3lab_gpu::compile_all(arch) {
        Ok(all) => {
            for (file, ptx) in all {
                let path = out.join(file.replace(".cu", ".ptx"));
                std::fs::write(&path, ptx).expect("write PTX");
                println!("{}", path.display());
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
