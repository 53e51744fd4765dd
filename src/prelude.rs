//! Everything a notebook cell (or a short program) needs, one `use v3lab::prelude::*;` away:
//! the model and its backends, checkpoints, the modules of each idea, tables and figures
//! that render inline in Jupyter (evcxr), the checks a notebook makes of what it shows, the
//! ablation studies' data and training runs, and the ndarray names the values come in.

pub use crate::ablations::corpus::{Corpus, CorpusSpec, Domain};
pub use crate::ablations::data::Tokenized;
pub use crate::ablations::presets::{Preset, PresetSpec};
pub use crate::ablations::run::{train_and_evaluate, RunResult, Variant};
pub use crate::backend::prelude::*;
pub use crate::generate::{GenerateOptions, Generation, Sampling};
pub use crate::io::MappedFile;
pub use crate::lab::{check, check_close, goldens_dir, project_dir, randn, rel_err, Table};
pub use crate::plot::{
    Bars, ColorScale, Figure, Heatmap, Heatmaps, Lines, Panel, Scale, Series, Svg, TokenClass, TokenStrip,
};
pub use crate::{
    balance, checkpoint, deploy, eplb, fp8, mla, model, moe, mtp, pipeline, train, AttentionImpl, Backend, CpuBackend,
    Decoder, ModelConfig, Params, RouteSpec, Routing, ScoreFunc, Transformer,
};
pub use indicatif::ProgressBar;
pub use ndarray::{self, s, Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis, Ix2, IxDyn};
