//! One module per subcommand.

pub mod eplb;
pub mod fp8;
pub mod generate;
pub mod inspect;
pub mod logits;
pub mod pipeline;
pub mod plan;
pub mod train;
