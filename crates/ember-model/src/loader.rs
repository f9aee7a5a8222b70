//! Loading a layer's tensors by name with their shapes checked, so every architecture file states
//! what it expects and a file that does not match is refused with the tensor named.

use crate::error::ModelError;
use crate::qlinear::{QHeads, QLinear, load_f32};
use burn::tensor::{Device, Tensor};
use ember_gguf::GgufFile;

/// The file being loaded and the device the weights go to.
#[derive(Clone, Copy)]
pub(crate) struct Loader<'a> {
    pub file: &'a GgufFile,
    pub device: &'a Device,
    /// Where routed experts go (the CPU under `ExpertPlacement::Cpu`, else `device`).
    pub expert_device: &'a Device,
}

fn shape_error(name: &str, found: String, expected: String) -> ModelError {
    ModelError::Tensor {
        name: name.to_owned(),
        reason: format!("shape {found}, expected {expected}"),
    }
}

impl Loader<'_> {
    /// Whether the file has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// Matrix `name` taking `k` inputs to `n` outputs.
    pub fn lin(&self, name: &str, k: usize, n: usize) -> Result<QLinear, ModelError> {
        let l = QLinear::load(self.file, name, self.device)?;
        if l.in_features() != k || l.out_features() != n {
            return Err(shape_error(
                name,
                format!("[{}, {}]", l.in_features(), l.out_features()),
                format!("[{k}, {n}]"),
            ));
        }
        Ok(l)
    }

    /// `count` stacked matrices `name` (GGUF dims `[k, n, count]`).
    pub fn stack(
        &self,
        name: &str,
        k: usize,
        n: usize,
        count: usize,
    ) -> Result<Vec<QLinear>, ModelError> {
        let v = QLinear::load_stack(self.file, name, self.device)?;
        match v.first() {
            Some(l) if v.len() == count && l.in_features() == k && l.out_features() == n => Ok(v),
            _ => Err(shape_error(
                name,
                format!(
                    "{} × [{}, {}]",
                    v.len(),
                    v.first().map_or(0, QLinear::in_features),
                    v.first().map_or(0, QLinear::out_features)
                ),
                format!("{count} × [{k}, {n}]"),
            )),
        }
    }

    /// A stack whose matrices are each `[first; second]` halves of `n` rows (a fused gate/up
    /// expert tensor, GGUF dims `[k, 2n, count]`), as two stacks of `[n, k]`, without copying.
    pub fn stack_halves(
        &self,
        name: &str,
        k: usize,
        n: usize,
        count: usize,
    ) -> Result<(Vec<QLinear>, Vec<QLinear>), ModelError> {
        let info = crate::qlinear::tensor(self.file, name)?;
        if info.dims() != [k as u64, 2 * n as u64, count as u64] {
            return Err(shape_error(
                name,
                format!("{:?}", info.dims()),
                format!("[{k}, {}, {count}]", 2 * n),
            ));
        }
        let ty = info.ggml_type();
        let bytes = self
            .file
            .tensor_bytes(info)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_owned(),
                reason: "data outside the file".into(),
            })?;
        let half = ty
            .bytes_for((n * k) as u64)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_owned(),
                reason: format!("rows of {k} do not fill whole {ty:?} blocks"),
            })? as usize;
        let (mut a, mut b) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for i in 0..count {
            let at = 2 * half * i;
            if at + 2 * half > bytes.len() {
                return Err(ModelError::Tensor {
                    name: name.to_owned(),
                    reason: "data shorter than its shape".into(),
                });
            }
            let part = |o: usize| bytes.slice(at + o..at + o + half);
            a.push(QLinear::from_bytes(part(0), ty, n, k, self.device, name)?);
            b.push(QLinear::from_bytes(
                part(half),
                ty,
                n,
                k,
                self.device,
                name,
            )?);
        }
        Ok((a, b))
    }

    /// The same file onto the experts' device.
    pub fn for_experts(&self) -> Loader<'_> {
        Loader {
            device: self.expert_device,
            ..*self
        }
    }

    /// Per-head matrices `name` (GGUF dims `[k, n, count]`) applied as one op.
    pub fn heads(
        &self,
        name: &str,
        k: usize,
        n: usize,
        count: usize,
    ) -> Result<QHeads, ModelError> {
        let q = QHeads::load(self.file, name, self.device)?;
        if q.in_features() != k || q.out_features() != n || q.count() != count {
            return Err(shape_error(
                name,
                format!(
                    "{} × [{}, {}]",
                    q.count(),
                    q.in_features(),
                    q.out_features()
                ),
                format!("{count} × [{k}, {n}]"),
            ));
        }
        Ok(q)
    }

    /// Vector `name` of `len` values, as f32.
    pub fn vec(&self, name: &str, len: usize) -> Result<Tensor<1>, ModelError> {
        let t = load_f32(self.file, name, self.device)?;
        if t.dims()[0] != len {
            return Err(shape_error(
                name,
                format!("[{}]", t.dims()[0]),
                format!("[{len}]"),
            ));
        }
        Ok(t)
    }

    /// Vector `name` of `len` values, on the host.
    pub fn host_vec(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        self.vec(name, len)?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Tensor {
                name: name.to_owned(),
                reason: format!("{e:?}"),
            })
    }
}
