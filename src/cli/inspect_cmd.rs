//! `nemo inspect`: load (so fully validate) a checkpoint and print what it is and costs.

use anyhow::Context;

use nemo_engine::model;

use super::args::InspectArgs;

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let summary = model::inspect(&args.model)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    println!("{summary}");
    Ok(())
}
