// A small socket loop around hiredis's synchronous context.
//
// hiredis's own blocking read (redisGetReply) cannot be interrupted from another thread. These
// helpers poll the connection's socket together with a wake-up pipe, so a Swift task that is
// cancelled can interrupt a read that would otherwise block for as long as the server wants
// (XREADGROUP ... BLOCK 0, BLMOVE ... 0).
#ifndef SWITCHYARD_CHIREDIS_SHIM_H
#define SWITCHYARD_CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>

// Outcomes of the helpers below.
#define SYR_OK 0
#define SYR_IO 1         // read or write failed; errno-style text in c->errstr
#define SYR_EOF 2        // the server closed the connection
#define SYR_TIMEOUT 3    // nothing arrived within the timeout
#define SYR_CANCELLED 4  // the wake-up pipe was written to
#define SYR_PROTOCOL 5   // the reply could not be parsed

/// Makes a freshly connected context non-blocking and close-on-exec. Returns SYR_OK or SYR_IO.
int syr_prepare(redisContext *c);

/// Writes hiredis's output buffer to the socket. Returns SYR_OK or an error code.
int syr_flush(redisContext *c, int wake_fd, int timeout_ms);

/// Reads one reply. `timeout_ms` < 0 waits for ever; it bounds each wait for more bytes, so a
/// large reply that keeps arriving never times out. On SYR_OK, *reply is a redisReply to free.
int syr_read_reply(redisContext *c, int wake_fd, int timeout_ms, void **reply);

/// 1 when the server has closed the socket (or it is in error), 0 when it looks healthy.
/// Costs one non-blocking recv(MSG_PEEK); lets a pooled connection notice a restarted server
/// before it sends a command rather than after.
int syr_peer_closed(redisContext *c);

/// A non-blocking, close-on-exec pipe used to wake a poll. Returns 0 on success.
int syr_wake_pipe(int fds[2]);
void syr_wake(int write_fd);
void syr_drain(int read_fd);
void syr_close(int fd);

/// Sleeps up to `ms`, returning SYR_CANCELLED early if the wake-up pipe is written to.
int syr_sleep(int wake_fd, int ms);

#endif
