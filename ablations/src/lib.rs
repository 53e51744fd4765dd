//! v3lab's ablation studies: small models retrained to repeat the DeepSeek-V3 studies
//! (§4.5: MTP, auxiliary-loss-free balancing, batch- vs sequence-wise balance), each
//! variant trained on identical data with identical seeds and evaluated the same way.

pub mod corpus;
pub mod data;
pub mod figures;
pub mod matching;
pub mod presets;
pub mod report;
pub mod run;
pub mod studies;
pub mod study;
