//! DeepSeekMoE feed-forward: shared experts every token runs plus `n_expert_used` routed experts
//! chosen per token, following llama.cpp's `build_moe_ffn`: router logits → softmax (V2) or
//! sigmoid (V3) → plus the selection bias (V3) → group-limited top-k (each group scored by the sum
//! of its two best, only the best `n_group_used` groups eligible) → top-k experts, weighted by
//! their unbiased probabilities, optionally normalised to sum 1, times the routed scaling factor.
//!
//! The routing is computed on the host (a few floats per token); each selected expert then runs
//! once over the rows routed to it. Expert matrices are slices of the mmap'd file, so a token
//! only touches the pages of the experts it selects.

use crate::config::{Gating, ModelConfig, MoeConfig};
use crate::error::ModelError;
use crate::layers::FeedForward;
use crate::loader::Loader;
use crate::qlinear::QLinear;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

/// The mixture-of-experts feed-forward of one layer.
#[derive(Debug)]
pub struct Moe {
    /// `ffn_gate_inp`: hidden → one logit per expert.
    router: QLinear,
    /// `exp_probs_b`: added to the probabilities for selection only (V3).
    bias: Option<Vec<f32>>,
    /// The routed experts: SwiGLU feed-forwards whose matrices are slices of the stacked tensors.
    experts: Vec<FeedForward>,
    /// The device the routed experts live on (the CPU when placed there, see
    /// [`crate::ExpertPlacement`]).
    expert_device: Device,
    shared: Option<FeedForward>,
    cfg: MoeConfig,
}

/// Where one token goes: `(expert, weight)` for each selected expert, best first.
pub type Route = Vec<(usize, f32)>;

impl Moe {
    /// Loads layer `i` (`blk.{i}.…`): router, optional selection bias, the expert stacks
    /// (separate `ffn_gate_exps`/`ffn_up_exps`, or one `ffn_gate_up_exps`) and the shared experts.
    pub(crate) fn load(ld: &Loader<'_>, cfg: &ModelConfig, i: usize) -> Result<Self, ModelError> {
        let Some(mc) = cfg.moe.clone() else {
            return Err(ModelError::Config("MoE layer without MoE settings".into()));
        };
        let p = |s: &str| format!("blk.{i}.{s}");
        let (e, ff, n) = (cfg.n_embd, mc.n_ff_exp, mc.n_expert);
        // Routed experts go to the experts' device.
        let ex = ld.for_experts();
        let (gates, ups) = if ex.has(&p("ffn_gate_up_exps.weight")) {
            // One stack of [gate rows; up rows] per expert: split each without copying.
            ex.stack_halves(&p("ffn_gate_up_exps.weight"), e, ff, n)?
        } else {
            (
                ex.stack(&p("ffn_gate_exps.weight"), e, ff, n)?,
                ex.stack(&p("ffn_up_exps.weight"), e, ff, n)?,
            )
        };
        let downs = ex.stack(&p("ffn_down_exps.weight"), ff, e, n)?;
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((gate, up), down)| FeedForward { gate, up, down })
            .collect();
        let bias = if ld.has(&p("exp_probs_b.bias")) {
            Some(ld.host_vec(&p("exp_probs_b.bias"), n)?)
        } else {
            None
        };
        let shared = if mc.n_expert_shared > 0 {
            let sff = ff * mc.n_expert_shared;
            Some(FeedForward {
                gate: ld.lin(&p("ffn_gate_shexp.weight"), e, sff)?,
                up: ld.lin(&p("ffn_up_shexp.weight"), e, sff)?,
                down: ld.lin(&p("ffn_down_shexp.weight"), sff, e)?,
            })
        } else {
            None
        };
        Ok(Moe {
            router: ld.lin(&p("ffn_gate_inp.weight"), e, n)?,
            bias,
            experts,
            expert_device: ld.expert_device.clone(),
            shared,
            cfg: mc,
        })
    }

    /// `x [T, n_embd] -> [T, n_embd]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [t, e] = x.dims();
        let device = x.device();
        let logits = self
            .router
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let n = self.cfg.n_expert;
        // Rows per expert, with their weights, in token order.
        let mut rows: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
        for (tok, l) in logits.chunks_exact(n).enumerate().take(t) {
            for (ex, w) in route(l, self.bias.as_deref(), &self.cfg) {
                rows[ex].push((tok, w));
            }
        }
        let shared = self.shared.as_ref().map(|s| s.forward(x.clone()));
        // Routed experts run where they live; with experts on the CPU and the rest on a GPU the
        // activations cross over once each way.
        let ed = &self.expert_device;
        let moved = *ed != device;
        let x = if moved { x.to_device(ed) } else { x };
        let mut out = Tensor::<2>::zeros([t, e], ed);
        for (expert, routed) in self.experts.iter().zip(&rows) {
            if routed.is_empty() {
                continue;
            }
            let idx: Vec<i64> = routed.iter().map(|&(tok, _)| tok as i64).collect();
            let w: Vec<f32> = routed.iter().map(|&(_, w)| w).collect();
            let r = routed.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [r]), ed);
            let w = Tensor::<2>::from_data(TensorData::new(w, [r, 1]), ed);
            let xe = if r == t && t == 1 {
                x.clone()
            } else {
                x.clone().select(0, idx.clone())
            };
            let y = expert.forward(xe) * w;
            out = out.select_assign(0, idx, y, IndexingUpdateOp::Add);
        }
        let out = if moved { out.to_device(&device) } else { out };
        match shared {
            Some(s) => s + out,
            None => out,
        }
    }
}

/// The experts one token goes to and their weights, from its router logits (llama.cpp
/// `build_moe_ffn`). Non-finite logits never select an expert over finite ones.
pub fn route(logits: &[f32], bias: Option<&[f32]>, c: &MoeConfig) -> Route {
    let n = logits.len();
    let probs: Vec<f32> = match c.gating {
        Gating::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|&x| x / sum).collect()
        }
        Gating::Sigmoid => logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
    };
    let mut sel: Vec<f32> = match bias {
        Some(b) => probs.iter().zip(b).map(|(p, b)| p + b).collect(),
        None => probs.clone(),
    };
    for s in &mut sel {
        if s.is_nan() {
            *s = f32::NEG_INFINITY;
        }
    }
    if c.n_group > 1 && n.is_multiple_of(c.n_group) {
        let per = n / c.n_group;
        // Each group scored by the sum of its two best.
        let scores: Vec<f32> = sel
            .chunks_exact(per)
            .map(|g| top_k(g, 2).iter().map(|&i| g[i]).sum())
            .collect();
        let keep = top_k(&scores, c.n_group_used);
        for (gi, g) in sel.chunks_exact_mut(per).enumerate() {
            if !keep.contains(&gi) {
                g.fill(f32::NEG_INFINITY);
            }
        }
    }
    let chosen = top_k(&sel, c.n_expert_used);
    let mut weights: Vec<f32> = chosen.iter().map(|&i| probs[i]).collect();
    if c.norm_weights {
        let sum: f32 = weights.iter().sum();
        let sum = sum.max(6.103_515_6e-5);
        for w in &mut weights {
            *w /= sum;
        }
    }
    if c.weights_scale != 0.0 && c.weights_scale != 1.0 {
        for w in &mut weights {
            *w *= c.weights_scale;
        }
    }
    chosen.into_iter().zip(weights).collect()
}

/// Indices of the `k` largest values, largest first (the lower index first among equals).
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(gating: Gating, groups: (usize, usize), used: usize) -> MoeConfig {
        MoeConfig {
            n_dense_lead: 0,
            n_expert: 8,
            n_expert_used: used,
            n_expert_shared: 1,
            n_ff_exp: 4,
            n_group: groups.0,
            n_group_used: groups.1,
            gating,
            norm_weights: false,
            weights_scale: 1.0,
        }
    }

    #[test]
    fn softmax_top_k_weights_are_probabilities() {
        let l = [0.0, 3.0, 1.0, 2.0, -1.0, 0.5, 2.5, 0.0];
        let r = route(&l, None, &cfg(Gating::Softmax, (1, 1), 3));
        let ids: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(ids, [1, 6, 3]);
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        for (i, w) in r {
            assert!((w - l[i].exp() / z).abs() < 1e-6);
        }
    }

    #[test]
    fn bias_changes_selection_not_weights() {
        let l = [0.0, 3.0, 1.0, 2.0, -1.0, 0.5, 2.5, 0.0];
        let mut b = [0.0f32; 8];
        b[4] = 10.0;
        let r = route(&l, Some(&b), &cfg(Gating::Sigmoid, (1, 1), 2));
        assert_eq!(r[0].0, 4);
        assert!((r[0].1 - 1.0 / (1.0 + 1f32.exp())).abs() < 1e-6);
        assert_eq!(r[1].0, 1);
    }

    #[test]
    fn groups_limit_the_choice() {
        // 4 groups of 2, scored by the sum of both: g0 0.3, g1 0.91, g2 1.0, g3 0.6. Only g2 and
        // g1 are eligible, so experts 6 and 7 (0.3 each) lose to 3 (0.01)'s group mates: 2, 4, 5.
        let sig = |p: f32| (p / (1.0 - p)).ln();
        let p = [0.1, 0.2, 0.9, 0.01, 0.5, 0.5, 0.3, 0.3];
        let l: Vec<f32> = p.iter().map(|&x| sig(x)).collect();
        let mut c = cfg(Gating::Sigmoid, (4, 2), 3);
        c.norm_weights = true;
        c.weights_scale = 2.5;
        let r = route(&l, None, &c);
        let ids: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(ids, [2, 4, 5]);
        let sum: f32 = r.iter().map(|x| x.1).sum();
        assert!((sum - 2.5).abs() < 1e-5, "{r:?}");
        assert!((r[0].1 - 0.9 / 1.9 * 2.5).abs() < 1e-5);
    }

    #[test]
    fn nan_logits_do_not_win() {
        let mut l = [0.0f32; 8];
        l[0] = f32::NAN;
        l[5] = 1.0;
        let r = route(&l, None, &cfg(Gating::Sigmoid, (1, 1), 1));
        assert_eq!(r[0].0, 5);
    }
}
