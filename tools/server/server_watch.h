/* server_watch.h - spectral-server's connection deadlines.
 *
 * libmicrohttpd's --timeout is an idle timeout: a client that sends a byte
 * now and then keeps its connection, and a SIGTERM drain, waiting as long as
 * it likes. This unit keeps a registry of the open connections (fed by
 * libmicrohttpd's connection notifications) and a watchdog thread that cuts
 * a connection (shutdown(2) on its socket: libmicrohttpd then closes it as
 * it would a client that left) when it holds a phase past the deadline:
 *
 *     receiving  its next request, line to last body byte, timed from when
 *                the connection opened or its previous answer was sent
 *     computing  no deadline: the request is ours to finish
 *     answering  the answer being read, timed from when it was queued
 *
 * Usage:
 *
 *     srv_watch *w = srv_watch_create(60.0);            // 60 s per phase
 *     srv_conn *c = srv_watch_open(w, fd);              // on MHD_CONNECTION_NOTIFY_STARTED
 *     srv_watch_set(w, c, SRV_CONN_COMPUTING);          // request received whole
 *     srv_watch_set(w, c, SRV_CONN_ANSWERING);          // answer queued
 *     srv_watch_set(w, c, SRV_CONN_RECEIVING);          // request done: the next one's clock
 *     srv_watch_cut_all(w);                             // the drain's deadline
 *     srv_watch_close(w, c);                            // on MHD_CONNECTION_NOTIFY_CLOSED
 *     srv_watch_free(w);                                // after the daemon is stopped
 *
 * The socket is never closed here, only shut down, and a connection leaves
 * the registry (under its lock) before libmicrohttpd closes its socket, so a
 * descriptor number reused by a new connection is never cut by mistake.
 *
 * Thread safety: every function may be called from any thread at once. */
#ifndef SPECTRAL_SERVER_WATCH_H
#define SPECTRAL_SERVER_WATCH_H

#include <stdint.h>

typedef struct srv_watch srv_watch;
typedef struct srv_conn srv_conn;

typedef enum { SRV_CONN_RECEIVING, SRV_CONN_COMPUTING, SRV_CONN_ANSWERING } srv_conn_phase;

/* Starts the watchdog; NULL when out of memory or no thread can start. */
srv_watch *srv_watch_create(double deadline_s);
void srv_watch_free(srv_watch *w);

/* Registers a connection (receiving, clock started); NULL when out of
 * memory (the connection then has only the idle timeout). */
srv_conn *srv_watch_open(srv_watch *w, int fd);
void srv_watch_close(srv_watch *w, srv_conn *c);
/* Enters a phase (c may be NULL); its clock starts now. */
void srv_watch_set(srv_watch *w, srv_conn *c, srv_conn_phase phase);
/* Cuts every connection that is not computing. */
void srv_watch_cut_all(srv_watch *w);
/* Connections cut so far. */
uint64_t srv_watch_cut_count(srv_watch *w);

#endif
