/* fuzz_replay - a main() for a libFuzzer harness where libFuzzer is not
 * there (gcc, the release and sanitizer builds): runs
 * LLVMFuzzerTestOneInput on every file given, on every prefix of it, and on
 * MUTATIONS deterministic mutations of each (bytes flipped, cut, repeated),
 * so that the harness's properties are checked in every build's tests and
 * not only in the fuzz phase.
 *
 *     fuzz_replay SEED_FILE...
 *
 * Exit status 0, or whatever the harness does on a failed property (abort). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MUTATIONS 300

static unsigned long long g_state = 88172645463325252ull;

static unsigned next_rand(void) {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return (unsigned)(g_state >> 16);
}

/* One mutation of seed (n bytes) into out (room for 2n + 16). */
static size_t mutate(const uint8_t *seed, size_t n, uint8_t *out) {
    static const char tokens[][8] = {"[", "]", "{", "}", "\"", ",", ":", "null", "true", "-1", "1e999", "\\u0000"};
    memcpy(out, seed, n);
    size_t len = n;
    const int edits = 1 + (int)(next_rand() % 4);
    for (int e = 0; e < edits && len; e++) {
        const size_t at = next_rand() % len;
        switch (next_rand() % 4) {
        case 0: out[at] ^= (uint8_t)(1u << (next_rand() % 8)); break;   /* flip a bit */
        case 1: len = at; break;                                         /* cut */
        case 2: {                                                        /* insert a JSON token */
            const char *t = tokens[next_rand() % (sizeof tokens / sizeof tokens[0])];
            const size_t k = strlen(t);
            if (len + k > 2 * n + 16) break;
            memmove(out + at + k, out + at, len - at);
            memcpy(out + at, t, k);
            len += k;
            break;
        }
        default: {                                                       /* repeat a stretch */
            size_t k = next_rand() % 16;
            if (k > len - at) k = len - at;
            if (len + k > 2 * n + 16) break;
            memmove(out + at + k, out + at, len - at);
            len += k;
        }
        }
    }
    return len;
}

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    long runs = 0;
    for (int f = 1; f < argc; f++) {
        FILE *fp = fopen(argv[f], "rb");
        if (!fp) {
            fprintf(stderr, "fuzz_replay: cannot open %s\n", argv[f]);
            return 2;
        }
        uint8_t seed[1 << 16];
        const size_t n = fread(seed, 1, sizeof seed, fp);
        fclose(fp);
        uint8_t *buf = malloc(2 * n + 16);
        if (!buf) return 2;
        for (size_t k = 0; k <= n; k++, runs++) {
            memcpy(buf, seed, k); /* an exact-size copy: ASan sees reads past the end */
            uint8_t *exact = malloc(k ? k : 1);
            if (!exact) return 2;
            memcpy(exact, buf, k);
            LLVMFuzzerTestOneInput(exact, k);
            free(exact);
        }
        for (int m = 0; m < MUTATIONS; m++, runs++) {
            const size_t len = mutate(seed, n, buf);
            uint8_t *exact = malloc(len ? len : 1);
            if (!exact) return 2;
            memcpy(exact, buf, len);
            LLVMFuzzerTestOneInput(exact, len);
            free(exact);
        }
        free(buf);
    }
    printf("fuzz_replay: %ld runs, no failed property\n", runs);
    return 0;
}
