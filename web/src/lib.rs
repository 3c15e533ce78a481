//! sapling in the browser: the page (`web/app.js`) drives a [`session::Session`] through these
//! bindings. Every method that touches the GPU returns a promise; none blocks.

pub mod session;

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use session::{Options, Session};

#[wasm_bindgen(start)]
fn start() {
    // Panics reach the browser console with their message instead of "unreachable".
    console_error_panic_hook::set_once();
}

/// The page's handle on a session. The session is moved out while an async call runs, so a
/// second call before the first settles is refused instead of racing it.
#[wasm_bindgen]
pub struct Trainer {
    slot: Rc<RefCell<Option<Session>>>,
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn json(value: &impl serde::Serialize) -> Result<JsValue, JsValue> {
    serde_json::to_string(value)
        .map(|s| JsValue::from_str(&s))
        .map_err(js_error)
}

/// Acquires WebGPU and builds the model; `options` is JSON (see `session::Options`), empty for
/// the defaults. Resolves to a [`Trainer`].
#[wasm_bindgen]
pub fn create(options: String) -> Promise {
    future_to_promise(async move {
        let options: Options = if options.trim().is_empty() {
            Options::default()
        } else {
            serde_json::from_str(&options).map_err(|e| js_error(format!("options: {e}")))?
        };
        let session = Session::start(options).await.map_err(js_error)?;
        Ok(Trainer {
            slot: Rc::new(RefCell::new(Some(session))),
        }
        .into())
    })
}

impl Trainer {
    /// Runs `work` on the session, taken out of its slot for the duration.
    fn with_session<F, Fut>(&self, work: F) -> Promise
    where
        F: FnOnce(Session) -> Fut + 'static,
        Fut: Future<Output = (Session, Result<JsValue, JsValue>)> + 'static,
    {
        let slot = self.slot.clone();
        future_to_promise(async move {
            let session = slot
                .borrow_mut()
                .take()
                .ok_or_else(|| js_error("the trainer is busy with another call; await it first"))?;
            let (session, result) = work(session).await;
            *slot.borrow_mut() = Some(session);
            result
        })
    }

    fn sync<T>(&self, work: impl FnOnce(&mut Session) -> T) -> Result<T, JsValue> {
        let mut slot = self.slot.borrow_mut();
        let session = slot
            .as_mut()
            .ok_or_else(|| js_error("the trainer is busy with another call; await it first"))?;
        Ok(work(session))
    }
}

#[wasm_bindgen]
impl Trainer {
    /// The adapter and the limits the batch planner works within (JSON).
    pub fn device(&self) -> Result<JsValue, JsValue> {
        self.sync(|s| json(&s.device()))?
    }

    /// Plans the micro-batch with `sizes` trial sizes of `steps` timed steps; resolves to the
    /// plan (JSON).
    #[wasm_bindgen(js_name = planBatch)]
    pub fn plan_batch(&self, sizes: usize, steps: usize) -> Promise {
        self.with_session(move |mut s| async move {
            let result = s.plan_batch(sizes, steps).await.map_err(js_error);
            let result = result.and_then(|plan| json(&plan));
            (s, result)
        })
    }

    /// One optimizer step; resolves to its report (JSON).
    pub fn step(&self) -> Promise {
        self.with_session(|mut s| async move {
            let result = s.step().await.map_err(js_error);
            let result = result.and_then(|report| json(&report));
            (s, result)
        })
    }

    /// The reconstruction figure as PNG bytes (`Uint8Array`).
    pub fn reconstruction(&self) -> Promise {
        self.with_session(|s| async move {
            let result = s.reconstruction().await.map_err(js_error);
            (s, result.map(|png| Uint8Array::from(png.as_slice()).into()))
        })
    }

    /// The encoder, or the whole MAE (`with_decoder`), as safetensors bytes in timm's ViT
    /// layout (`Uint8Array`).
    pub fn weights(&self, with_decoder: bool) -> Promise {
        self.with_session(move |s| async move {
            let result = s.weights_safetensors(with_decoder).await.map_err(js_error);
            (
                s,
                result.map(|bytes| Uint8Array::from(bytes.as_slice()).into()),
            )
        })
    }

    /// Starts over from the weights of a safetensors file (`bytes`, named `name`); resolves to
    /// a line saying what was loaded.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, name: String, bytes: Vec<u8>) -> Promise {
        self.with_session(move |mut s| async move {
            let result = s.load_weights(&name, bytes).map_err(js_error);
            (s, result.map(|report| JsValue::from_str(&report)))
        })
    }

    /// Masks `ratio` of each image's patches from the next step on.
    #[wasm_bindgen(js_name = setMaskRatio)]
    pub fn set_mask_ratio(&self, ratio: f64) -> Result<(), JsValue> {
        self.sync(|s| s.set_mask_ratio(ratio).map_err(js_error))?
    }

    /// The short side, in pixels, to draw a dropped photo at before `addPixels`.
    #[wasm_bindgen(js_name = keepSide)]
    pub fn keep_side(&self) -> Result<u32, JsValue> {
        self.sync(|s| s.keep_side())
    }

    /// Adds a dropped image the page decoded (`width` x `height` RGBA bytes) to the training
    /// set; returns the number of images.
    #[wasm_bindgen(js_name = addPixels)]
    pub fn add_pixels(
        &self,
        name: &str,
        width: u32,
        height: u32,
        rgba: Vec<u8>,
    ) -> Result<usize, JsValue> {
        self.sync(|s| s.add_pixels(name, width, height, rgba).map_err(js_error))?
    }

    #[wasm_bindgen(js_name = imageCount)]
    pub fn image_count(&self) -> Result<usize, JsValue> {
        self.sync(|s| s.image_count())
    }

    /// Call after a pause so images/s counts training time only.
    pub fn pause(&self) -> Result<(), JsValue> {
        self.sync(|s| s.pause())
    }
}
