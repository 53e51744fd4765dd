//! v3lab's ablation studies: small models retrained to repeat the DeepSeek-V3 studies.

pub mod corpus;
