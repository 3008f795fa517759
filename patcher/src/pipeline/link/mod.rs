//! Link: rewrite the planned objects so they bind to the running instances of statics and
//! thread-locals, and link them into an image at a fixed address near the executable.

pub mod image;
pub mod rewrite;

use crate::pipeline::plan::PatchPlan;
use crate::session::Session;
use image::{image_file_name, link_image, ImageRequest, LinkedImage};
use linker_shim::{Result, Revision};

/// Links `plan`, made from `all_objects` (the build `revision` records, its unchanged
/// libraries included), into the session's next image, placed right after the previous one.
pub fn link_patch(
    session: &mut Session,
    plan: &PatchPlan,
    revision: &Revision,
    all_objects: &[std::path::PathBuf],
) -> Result<LinkedImage> {
    let index = session.images_linked;
    // Named after the build too: a hotpatch killed mid-link leaves its linker running on
    // its own directory and file, which the next session's never share.
    let work_dir = session
        .patches_dir
        .join(format!("work-{index}-{}", revision.id));
    let output = session
        .patches_dir
        .join(image_file_name(index, &revision.id));
    let entry_points = plan.roots.union(&plan.redirected).cloned().collect();
    let image = link_image(
        &ImageRequest {
            exe: &session.exe,
            all_objects,
            objects: &plan.objects,
            relinked: &plan.relinked,
            entry_points: &entry_points,
            earlier_patch_data: &session.earlier_patch_data,
            base: session.image_space.next_base(),
            work_dir: &work_dir,
            output: &output,
        },
        &session.toolchain,
    );
    let _ = std::fs::remove_dir_all(&work_dir);
    session.images_linked += 1;
    let image = image?;
    if let Err(full) = session.image_space.claim(image.end) {
        let _ = std::fs::remove_file(&image.path);
        return Err(full);
    }
    Ok(image)
}
