//! Deterministic parallel gzip: one gzip member whose deflate stream is cut
//! at fixed input offsets, each piece compressed on its own.
//!
//! The input is split into [`BLOCK_SIZE`] blocks (the last one shorter, or
//! empty). Each block is compressed by a fresh raw deflate compressor with
//! no preset dictionary, ending in a sync flush (an empty stored block, so
//! the piece ends on a byte boundary with BFINAL clear); the last block ends
//! with BFINAL set instead. The pieces are written in input order between
//! one gzip header and a trailer whose CRC-32 is the pieces' CRCs combined.
//! Where a block starts and how it is compressed depend only on the input,
//! never on the number of threads or on timing, so the bytes are the same
//! for any pool size (as pigz with `--independent` and a fixed block size).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use flate2::{Compress, Crc, FlushCompress, Status};
use rayon::ThreadPool;

/// Input bytes per independently compressed block.
pub const BLOCK_SIZE: usize = 1 << 20;

/// The fixed gzip header: deflate, no flags, mtime 0, XFL 0, OS byte 255.
fn header() -> [u8; 10] {
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, crate::compress::GZIP_OS_BYTE]
}

/// The process's compression threads: a pool of its own (not rayon's
/// global one, where layers are written), so a writer waiting for its
/// blocks never holds a thread its blocks need. Sized like rayon's
/// default: `RAYON_NUM_THREADS`, else one per CPU.
pub fn shared_pool() -> Arc<ThreadPool> {
    static POOL: OnceLock<Arc<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .thread_name(|i| format!("farm-gzip-{i}"))
                .build()
                .expect("starting the compression threads"),
        )
    })
    .clone()
}

/// One compressed block: its deflate bytes and the CRC of its input.
struct Piece {
    deflate: io::Result<Vec<u8>>,
    crc: Crc,
}

/// A gzip writer that compresses [`BLOCK_SIZE`] blocks on `pool`'s threads
/// while the caller keeps writing. At most about two blocks per thread are
/// in flight, so memory stays bounded whatever the input size.
pub struct ParallelGzip<W: Write> {
    out: W,
    pool: Arc<ThreadPool>,
    level: u32,
    block: Vec<u8>,
    in_flight: VecDeque<mpsc::Receiver<Piece>>,
    max_in_flight: usize,
    crc: Crc,
}

impl<W: Write> ParallelGzip<W> {
    /// Writes the gzip header to `out`; `level` is deflate's 0–9.
    pub fn new(mut out: W, level: u32, pool: Arc<ThreadPool>) -> io::Result<Self> {
        out.write_all(&header())?;
        let max_in_flight = 2 * pool.current_num_threads() + 1;
        Ok(ParallelGzip {
            out,
            pool,
            level,
            block: Vec::with_capacity(BLOCK_SIZE),
            in_flight: VecDeque::new(),
            max_in_flight,
            crc: Crc::new(),
        })
    }

    /// Hands the current block to the pool (or compresses it here when
    /// this thread is one of the pool's own, which must not block on it).
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(if last { 0 } else { BLOCK_SIZE }));
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        let job = move || {
            let mut crc = Crc::new();
            crc.update(&block);
            let deflate = deflate_block(&block, level, last);
            let _ = tx.send(Piece { deflate, crc });
        };
        if self.pool.current_thread_index().is_some() {
            job();
        } else {
            self.pool.spawn(job);
        }
        self.in_flight.push_back(rx);
        while self.in_flight.len() > self.max_in_flight {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let piece = rx
            .recv()
            .map_err(|_| io::Error::other("a gzip compression thread stopped without a result"))?;
        self.out.write_all(&piece.deflate?)?;
        self.crc.combine(&piece.crc);
        Ok(())
    }

    /// Compresses the last block, writes everything and the trailer, and
    /// returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK_SIZE - self.block.len();
        let n = buf.len().min(room);
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    /// Writes out the blocks already in flight. It never cuts the current
    /// block short: block boundaries depend on the input alone.
    fn flush(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()
    }
}

/// Raw deflate of one block with a fresh compressor: ends with a sync flush
/// (byte-aligned, BFINAL clear) or, for the last block, with BFINAL set.
fn deflate_block(input: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Deflate's worst case is stored blocks: 5 bytes per 64 KiB plus the
    // flush markers, so this is enough for one call in practice.
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let all_in = c.total_in() as usize == input.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
        out.reserve(64 << 10);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gzip_with(data: &[u8], pool: &Arc<ThreadPool>, chunk: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), 6, pool.clone()).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    /// Proves empty input, input of exactly one block and a compressor
    /// pool's own thread writing (compressing inline) all give valid gzip.
    #[test]
    fn edge_sizes_and_writing_from_a_pool_thread() {
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap());
        for len in [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
            let out = gzip_with(&data, &pool, 70_000);
            assert!(gunzip(&out) == data, "round trip of {len} bytes");
            let trailer = &out[out.len() - 8..];
            assert_eq!(
                u32::from_le_bytes(trailer[4..].try_into().unwrap()),
                len as u32,
                "ISIZE"
            );
            let inline = pool.install(|| gzip_with(&data, &pool, 70_000));
            assert!(
                inline == out,
                "compressing inline on a pool thread gives the same bytes ({len})"
            );
        }
    }
}
