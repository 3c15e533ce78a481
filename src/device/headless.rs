//! A quiet start on Linux machines without a display. Mesa's implicit Vulkan layer
//! `VK_LAYER_MESA_device_select` asks libwayland for a compositor on every adapter enumeration
//! to learn which GPU drives the screen; with no session, libwayland prints "XDG_RUNTIME_DIR is
//! invalid or not set" each time. No screen means no such GPU to prefer, and wgpu ranks the
//! adapters itself, so the layer has nothing to do there and is switched off the way its own
//! manifest offers (`NODEVICE_SELECT=1`).

/// Switches Mesa's device-selection layer off when no display session exists and the user has
/// not chosen a device through it (`MESA_VK_DEVICE_SELECT`).
///
/// # Safety
/// Writes the environment, which is only sound while no other thread reads it: call it first
/// in `main`, before any thread starts.
pub unsafe fn quiet_headless_vulkan() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let session = [
        "WAYLAND_DISPLAY",
        "DISPLAY",
        "MESA_VK_DEVICE_SELECT",
        "NODEVICE_SELECT",
    ]
    .into_iter()
    .any(set)
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|dir| std::path::Path::new(&dir).is_dir());
    if !session {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
