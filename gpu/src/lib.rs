//! v3lab's CUDA backend (cudarc; kernels as `.cu` sources compiled by NVRTC at run time).
//! It builds on any machine: the CUDA driver is loaded dynamically when first used.
