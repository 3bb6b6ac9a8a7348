//! The rkyv validation of stored records. Every record read from sled is untrusted
//! bytes (a damaged disk, a restored or copied store): `Store::message` validates a
//! message record with `rkyv::access::<ArchivedMessageRecord, rancor::Error>` (the
//! same call is made here), `check_user_record` validates a user record for `verify`,
//! and queue and user records are read with `rkyv::from_bytes`.
//!
//! No input may make validation panic, and whatever passes it must be safe to use the
//! way maild does: read as a stored message (`stored_len`, the mbox writers of export and the
//! backup range files), deserialized (never failing after validation), and stored again
//! to the same value.
#![no_main]

use engine::store::record::{ArchivedMessageRecord, MessageRecord, QueueRecord, UserRecord};
use engine::store::StoredMessage;
use engine::users::check_user_record;
use libfuzzer_sys::fuzz_target;
use rkyv::rancor;

fuzz_target!(|data: &[u8]| {
    if let Ok(archived) = rkyv::access::<ArchivedMessageRecord, rancor::Error>(data) {
        let record = rkyv::deserialize::<MessageRecord, rancor::Error>(archived)
            .expect("a validated message record does not deserialize");
        assert_eq!(record.number, archived.number.to_native());
        let message = StoredMessage::from_record(&record);
        assert_eq!((record.trace.len() + record.body.len()) as u64, message.stored_len());
        let mut mbox = Vec::new();
        engine::mbox::write_entry(&mut mbox, &message).unwrap();
        let mut maildir = Vec::new();
        engine::mbox::write_delivered(&mut maildir, &message, false).unwrap();
        round_trip(&record);
    }

    let user = rkyv::from_bytes::<UserRecord, rancor::Error>(data);
    assert_eq!(check_user_record(data).is_ok(), user.is_ok(), "check_user_record and from_bytes disagree");
    if let Ok(user) = user {
        round_trip(&user);
    }

    if let Ok(queue) = rkyv::from_bytes::<QueueRecord, rancor::Error>(data) {
        round_trip(&queue);
    }
});

fn round_trip<T>(record: &T)
where
    T: PartialEq
        + std::fmt::Debug
        + rkyv::Archive
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let bytes = rkyv::to_bytes::<rancor::Error>(record).unwrap();
    let again = rkyv::from_bytes::<T, rancor::Error>(&bytes).unwrap();
    assert_eq!(&again, record, "a record does not survive store and load");
}
