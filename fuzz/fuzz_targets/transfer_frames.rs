//! Arbitrary bytes as a peer's stream: the frame splitter, the message decoders and the
//! receiver and sender state machines must reject them without panicking or allocating
//! beyond the frame bounds.
#![no_main]

use bytes::{Bytes, BytesMut};
use hw_offload::ChunkId;
use libfuzzer_sys::fuzz_target;
use transfer_proto::session::{Receiver, Sender};
use transfer_proto::wire::{self, CHUNK_FRAME_HEADER_LEN, Control, Data, MAX_DATA_LEN};

fuzz_target!(|input: &[u8]| {
    let mut buf = BytesMut::from(input);
    let mut receiver = Receiver::new();
    let mut sender = Sender::new(4);
    // The sender has offered something, so that Need and Retry reach its checks.
    let _ = sender.offer(Vec::new());
    while let Ok(Some(frame)) = wire::split_frame(&mut buf, MAX_DATA_LEN) {
        match wire::decode_control(&frame) {
            Ok(Control::Offer { seq, objects }) => {
                if let Ok(lookup) = receiver.on_offer(seq, objects) {
                    let _ = receiver.need(seq, lookup.into_iter().map(|c| (c, Vec::new())).collect());
                }
            }
            Ok(Control::OfferDone { offers }) => {
                let _ = receiver.on_offer_done(offers);
            }
            Ok(Control::Need { seq, wants }) => {
                let _ = sender.on_need(seq, wants);
            }
            Ok(Control::Retry { ids }) => {
                let _ = sender.on_retry(ids);
            }
            Ok(_) | Err(_) => {}
        }
        // The same bytes as a data frame: a chunk the receiver may or may not expect.
        let chunk = match wire::decode_data(Bytes::clone(&frame)) {
            Ok(Data::Chunk(raw)) | Ok(Data::Delta { frame: raw, .. }) => raw,
            Err(_) => continue,
        };
        // The id sits in the last 32 bytes of a stored frame's header.
        if chunk.len() >= CHUNK_FRAME_HEADER_LEN {
            let id = ChunkId(chunk[16..48].try_into().expect("32 bytes"));
            let plain_len = u32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes"));
            if receiver.on_chunk(&id, plain_len, chunk.len() as u64, false).is_err() {
                let _ = receiver.on_bad_chunk(&id, chunk.len() as u64);
            }
        }
        let _ = receiver.is_complete();
    }
});
