//! The admin socket's frames (`engine::admin::frame`): `read_frame` and
//! `decode_request` take bytes from whoever can open `DATA/maild.sock` (and, the other
//! way, from maild), so no input may make them panic or allocate without bound beyond
//! `MAX_FRAME`. Every frame read is written back with `write_frame` and must read back
//! the same, and every decoded request must encode and decode to itself.
#![no_main]

use engine::admin::frame::{decode_request, encode_request, read_frame, write_frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The payload of a request frame is rkyv bytes from the client: decode the input as
    // one, as maild does after reading the frame.
    check_request(data);

    // The input as a stream of frames.
    let mut input = data;
    while let Ok(frame) = read_frame(&mut input) {
        let mut wire = Vec::new();
        write_frame(&mut wire, &frame).unwrap();
        let again = read_frame(&mut wire.as_slice()).unwrap();
        assert_eq!(again, frame, "a frame does not survive write and read");
        if let Frame::Request(payload) = &frame {
            check_request(payload);
        }
    }
});

fn check_request(bytes: &[u8]) {
    if let Ok(request) = decode_request(bytes) {
        let encoded = encode_request(&request).unwrap();
        assert_eq!(decode_request(&encoded).unwrap(), request, "a request does not survive encode and decode");
    }
}
