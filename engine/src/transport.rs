//! A TCP connection that may turn into TLS midway (STARTTLS, STLS): one type for the
//! daemon's server sessions, the relay's outbound client and mailtool's client.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};

use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData, StreamOwned};

pub enum Transport<C> {
    Plain(TcpStream),
    Tls(Box<StreamOwned<C, TcpStream>>),
}

pub type ServerTransport = Transport<ServerConnection>;
pub type ClientTransport = Transport<ClientConnection>;

impl<C> Transport<C> {
    /// The socket below, for timeouts and shutdown.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

impl<C, S> Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Runs the handshake of `session` over the plain socket, then carries every byte
    /// through TLS. Bounded by the socket's timeouts; on an error the transport is left
    /// as it was and the connection is of no further use.
    pub fn upgrade(&mut self, mut session: C) -> io::Result<()> {
        let Transport::Plain(plain) = self else {
            return Err(io::Error::other("TLS is already active"));
        };
        let mut tcp = plain.try_clone()?;
        while session.is_handshaking() {
            session.complete_io(&mut tcp)?;
        }
        *self = Transport::Tls(Box::new(StreamOwned::new(session, tcp)));
        Ok(())
    }

    /// Tells a TLS peer that the session ends (close_notify), so it need not take the
    /// close for a truncation. Nothing for plain TCP.
    pub fn close_tls(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

impl<C, S> Read for Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            // A TLS peer that closes without close_notify has still closed.
            Transport::Tls(tls) => match tls.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl<C, S> Write for Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}
