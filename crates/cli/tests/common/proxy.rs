//! A TCP proxy on 127.0.0.1 that a test stops and restarts, to cut a
//! daemon off from a database or server and let it back.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Interval at which the accept loop checks for a stop request.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Forwards every connection to its port to `target`, byte for byte.
pub struct TcpProxy {
    address: SocketAddr,
    target: SocketAddr,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, shut down on stop.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accept_loop: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let mut proxy = TcpProxy {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            running: None,
        };
        proxy.restart();
        proxy
    }

    /// Address that clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes the listening port, so new connections are refused, and
    /// shuts down every forwarded connection.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stop.store(true, Ordering::SeqCst);
        running
            .accept_loop
            .join()
            .expect("the accept loop panicked");
        for stream in running.streams.lock().expect("stream list").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "the proxy is already running");
        let listener = TcpListener::bind(self.address).expect("bind the proxy port");
        self.address = listener.local_addr().expect("the proxy's address");
        listener
            .set_nonblocking(true)
            .expect("make the proxy listener non-blocking");

        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let accept_loop = {
            let stop = Arc::clone(&stop);
            let streams = Arc::clone(&streams);
            let target = self.target;
            thread::spawn(move || accept_until_stopped(&listener, target, &stop, &streams))
        };
        self.running = Some(Running {
            stop,
            streams,
            accept_loop,
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_until_stopped(
    listener: &TcpListener,
    target: SocketAddr,
    stop: &AtomicBool,
    streams: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if let Err(e) = forward(client, target, streams) {
                    eprintln!("proxy: failed to forward a connection to {target}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => panic!("proxy accept failed: {e}"),
        }
    }
}

/// Connects to `target` and copies bytes both ways on two threads.
fn forward(
    client: TcpStream,
    target: SocketAddr,
    streams: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(target)?;
    {
        let mut streams = streams.lock().expect("stream list");
        streams.push(client.try_clone()?);
        streams.push(server.try_clone()?);
    }
    let (mut client_read, mut server_write) = (client.try_clone()?, server.try_clone()?);
    let (mut server_read, mut client_write) = (server, client);
    thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let _ = io::copy(&mut server_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    Ok(())
}
