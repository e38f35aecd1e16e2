/* spectral-embed's output: one record per input on standard output, whole
 * or not at all.
 *
 *     output_begin(OUTPUT_JSONL);            // also takes over SIGINT / SIGTERM
 *     int e = output_record("a.txt", n, embedding, n_pooled, NULL, 0, 0);
 *     if (e) ... strerror(e) ...             // the output failed: stop
 *     e = output_end();                      // closes -o json's array, flushes
 *
 * Records go through a buffer of our own and write(2), retried after EINTR
 * and after a partial write (stdio drops its buffer on EINTR, tearing the
 * record, and reports some failures as EIO): a record is flushed whole
 * before output_record returns, and a failure is reported with the errno
 * of the write that failed.
 *
 * SIGINT / SIGTERM: between records the process ends at once; while a
 * record is being written it ends right after that record. Either way -o
 * json's array is closed first, so what was written is one valid document,
 * and the exit status is 128 + the signal. A reader that closes the pipe
 * (`| head`) ends the process by SIGPIPE, as it does other Unix tools; with
 * SIGPIPE ignored, the write fails with EPIPE and output_record says so. */
#ifndef SPECTRAL_EMBED_OUTPUT_H
#define SPECTRAL_EMBED_OUTPUT_H

#include <stdint.h>

enum output_format { OUTPUT_JSONL, OUTPUT_JSON, OUTPUT_RAW };

void output_begin(enum output_format format);
/* One record: the pooled vector (n_pooled floats) when pooled is not NULL,
 * else `rows` token states of n_embd floats. input is the input's name as
 * given (any bytes). 0, or the errno of the failed write. */
int output_record(const char *input, int64_t n_tokens, const float *pooled, int64_t n_pooled,
                  const float *states, int64_t rows, int64_t n_embd);
/* Ends the output: -o json's closing bracket, then everything flushed. 0, or
 * the errno of the failed write (also of an earlier one). */
int output_end(void);

#endif
