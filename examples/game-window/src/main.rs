//! A game loop in a window: a square moves across it, one pixel a frame, in the color
//! `square_color` gives. Run it under `hotpatch run` and edit `square_color` while it runs:
//! the square changes color where it is, and the frame count goes on. Every 30 frames it
//! prints `frame=F x=X`.

use minifb::{Window, WindowOptions};

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
const SIDE: usize = 40;
const BACKGROUND: u32 = 0x20_20_20;

/// The square's color, `0xRRGGBB`. Edit it while the window is open.
fn square_color() -> u32 {
    0xff_00_00
}

/// One frame: the background, and the square at `x`.
fn draw(buffer: &mut [u32], x: usize) {
    buffer.fill(BACKGROUND);
    let color = square_color();
    let top = (HEIGHT - SIDE) / 2;
    for row in buffer.chunks_mut(WIDTH).skip(top).take(SIDE) {
        row[x..x + SIDE].fill(color);
    }
}

fn main() {
    let mut window = Window::new("hotpatch game", WIDTH, HEIGHT, WindowOptions::default())
        .expect("a window (is DISPLAY set?)");
    window.set_target_fps(60);
    let mut buffer = vec![0; WIDTH * HEIGHT];
    let mut frame: u64 = 0;
    while window.is_open() {
        let x = (frame as usize) % (WIDTH - SIDE);
        draw(&mut buffer, x);
        window
            .update_with_buffer(&buffer, WIDTH, HEIGHT)
            .expect("the frame is shown");
        if frame.is_multiple_of(30) {
            println!("frame={frame} x={x}");
        }
        frame += 1;
    }
}
