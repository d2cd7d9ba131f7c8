/* The storage side of mtl convert: the record layout (round trip, every kind of corruption refused
 * without reading out of bounds), the LMDB writer and reader (exact round trips, refusal of missing,
 * foreign, truncated, incomplete and inconsistent databases), and the image helpers (decode errors,
 * resize and CHW against hand-computed arrays, atomic PNG writing). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "check.h"
#include "test_util.h"
#include "data/db.h"
#include "data/image.h"
#include "data/record.h"
#include "layers/labels.h"

static char tmp_dir[64];

static const char *tmp_path(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

/* Removes a directory tree two levels deep (the databases' directories and their files). */
static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof(a)) == 0; }

/* ---- records ---- */

static void test_record_round_trip(void)
{
    const float labels[4] = {1.0f, 0.1f, MTL_LABEL_MISSING, -3.25e-7f};
    const float boxes[10] = {3, 1.5f, 2.25f, 10, 20, 7, 0, 0, 0.5f, 0.25f};
    uint8_t pixels[12];
    for (int i = 0; i < 12; i++)
        pixels[i] = (uint8_t)(i * 21);
    mtl_record r = {.channels = 3, .height = 2, .width = 2, .n_labels = 4, .labels = labels, .n_boxes = 2,
                    .boxes = boxes, .n_bytes = 12, .data = pixels};
    size_t size = mtl_record_size(&r);
    CHECK_INT(size, 20 + 4 + 16 + 4 + 40 + 4 + 12);
    uint8_t *buf = malloc(size);
    mtl_record_encode(&r, buf);
    /* little-endian magic "MTLR", version 1, flags 0, then channels 3 */
    CHECK(memcmp(buf, "MTLR\x01\x00\x00\x00\x03\x00\x00\x00", 12) == 0);
    mtl_record d;
    mtl_error err = {0};
    CHECK_OK(mtl_record_decode(buf, size, "record", &d, &err), &err);
    CHECK_INT(d.flags, 0);
    CHECK_INT(d.channels, 3);
    CHECK_INT(d.height, 2);
    CHECK_INT(d.width, 2);
    CHECK_INT(d.n_labels, 4);
    CHECK_INT(d.n_boxes, 2);
    CHECK_INT(d.n_bytes, 12);
    for (int i = 0; i < 4; i++)
        CHECK_MSG(same_bits(mtl_record_label(&d, i), labels[i]), "label %d: %.9g vs %.9g", i,
                  (double)mtl_record_label(&d, i), (double)labels[i]);
    CHECK(mtl_label_is_missing(mtl_record_label(&d, 2)));
    for (int i = 0; i < 10; i++)
        CHECK(same_bits(mtl_record_box(&d, i), boxes[i]));
    CHECK(d.data == buf + size - 12 && memcmp(d.data, pixels, 12) == 0);

    /* encoded bytes of any length, no labels */
    const uint8_t file[5] = {0x89, 'P', 'N', 'G', 0};
    mtl_record e = {.flags = MTL_RECORD_ENCODED, .channels = 1, .height = 28, .width = 28, .n_bytes = 5, .data = file};
    uint8_t *ebuf = malloc(mtl_record_size(&e));
    mtl_record_encode(&e, ebuf);
    CHECK_OK(mtl_record_decode(ebuf, mtl_record_size(&e), "encoded", &d, &err), &err);
    CHECK_INT(d.flags, MTL_RECORD_ENCODED);
    CHECK_INT(d.n_bytes, 5);
    CHECK_INT(d.height, 28);
    CHECK(memcmp(d.data, file, 5) == 0);
    free(ebuf);

    /* every truncation fails (the sanitizer build checks nothing is read past the end) */
    int all_fail = 1;
    for (size_t n = 0; n < size; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        if (mtl_record_decode(cut, n, "cut record", &d, &err) != MTL_ERR_CORRUPT)
            all_fail = 0;
        free(cut);
    }
    CHECK_MSG(all_fail, "every truncated record is refused");
    CHECK_FAILS(mtl_record_decode(buf, size - 1, "record 7 of 'db'", &d, &err), &err, MTL_ERR_CORRUPT,
                "record 7 of 'db'");
    CHECK_FAILS(mtl_record_decode(buf, 3, "short", &d, &err), &err, MTL_ERR_CORRUPT, "shorter than a record header");
    CHECK_FAILS(mtl_record_decode(NULL, 0, "none", &d, &err), &err, MTL_ERR_CORRUPT, "none");

    /* an extra byte at the end is as wrong as a missing one */
    uint8_t *longer = malloc(size + 1);
    memcpy(longer, buf, size);
    longer[size] = 0;
    CHECK_FAILS(mtl_record_decode(longer, size + 1, "long", &d, &err), &err, MTL_ERR_CORRUPT, "image bytes");
    free(longer);

    uint8_t *bad = malloc(size);
    memcpy(bad, buf, size);
    bad[0] = 'X';
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "bad magic");
    memcpy(bad, buf, size);
    bad[4] = 2;
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_UNSUPPORTED, "version 2");
    memcpy(bad, buf, size);
    bad[6] = 6;
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "unknown flags");
    memcpy(bad, buf, size);
    memset(bad + 20, 0xff, 4); /* n_labels = 2^32 - 1 */
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "labels need");
    memcpy(bad, buf, size);
    bad[20] = 30; /* 30 labels: beyond the buffer but not absurd */
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "30 labels");
    memcpy(bad, buf, size);
    memset(bad + 40, 0xff, 4); /* n_boxes */
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "boxes need");
    memcpy(bad, buf, size);
    memset(bad + 84, 0xff, 4); /* n_bytes */
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "image bytes");
    memcpy(bad, buf, size);
    bad[8] = 4; /* 4 channels: 16 pixel bytes expected, 12 present */
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "12 bytes of pixels for a 4x2x2");
    memcpy(bad, buf, size);
    memset(bad + 8, 0xff, 3); /* channels beyond int */
    bad[11] = 0x7f;
    CHECK_FAILS(mtl_record_decode(bad, size, "r", &d, &err), &err, MTL_ERR_CORRUPT, "r is corrupt");
    free(bad);
    free(buf);
}

/* ---- databases ---- */

#define N_RECORDS 2500 /* more than one write batch */

static void fill_sample(int i, uint8_t pixels[2 * 3 * 4], float labels[3])
{
    for (int k = 0; k < 24; k++)
        pixels[k] = (uint8_t)(i * 7 + k * 11);
    labels[0] = (float)(i % 10);
    labels[1] = i % 3 == 0 ? MTL_LABEL_MISSING : 0.1f * (float)i;
    labels[2] = i == 5 ? -3.25e-7f : 1.0f / (float)(i + 1);
}

static mtl_status write_db(const char *path, int n, mtl_error *err)
{
    mtl_db_writer *w;
    MTL_TRY(mtl_db_writer_open(path, &w, err));
    int64_t missing = 0;
    for (int i = 0; i < n; i++) {
        uint8_t pixels[24];
        float labels[3];
        fill_sample(i, pixels, labels);
        missing += mtl_label_is_missing(labels[1]);
        mtl_record r = {.channels = 2, .height = 3, .width = 4, .n_labels = 3, .labels = labels, .n_bytes = 24,
                        .data = pixels};
        mtl_status st = mtl_db_writer_put(w, i, &r, err);
        if (st != MTL_OK) {
            mtl_db_writer_abort(w);
            return st;
        }
    }
    char *names[] = {"class", "size", "scale"};
    mtl_db_meta meta = {.count = n, .n_labels = 3, .label_names = names, .channels = 2, .height = 3, .width = 4,
                        .skipped = 2, .missing_labels = missing};
    return mtl_db_writer_finish(w, &meta, err);
}

static void test_db_round_trip(void)
{
    mtl_error err = {0};
    const char *path = tmp_path("train_lmdb");
    CHECK_OK(write_db(path, N_RECORDS, &err), &err);
    CHECK(exists(path));
    CHECK(!exists(tmp_path("train_lmdb.partial")));

    mtl_db *db = NULL;
    CHECK_OK(mtl_db_open(path, &db, &err), &err);
    if (!db)
        return;
    const mtl_db_meta *m = mtl_db_meta_of(db);
    CHECK_INT(m->count, N_RECORDS);
    CHECK_INT(m->n_labels, 3);
    CHECK(m->label_names && strcmp(m->label_names[0], "class") == 0 && strcmp(m->label_names[2], "scale") == 0);
    CHECK_INT(m->channels, 2);
    CHECK_INT(m->height, 3);
    CHECK_INT(m->width, 4);
    CHECK_INT(m->encoded, 0);
    CHECK_INT(m->has_boxes, 0);
    CHECK_INT(m->skipped, 2);
    CHECK_INT(m->missing_labels, (N_RECORDS + 2) / 3);
    int pixels_equal = 1, labels_exact = 1;
    for (int i = 0; i < N_RECORDS; i++) {
        uint8_t pixels[24];
        float labels[3];
        fill_sample(i, pixels, labels);
        mtl_record r;
        if (mtl_db_get(db, i, &r, &err) != MTL_OK) {
            CHECK_MSG(0, "record %d: %s", i, err.message);
            break;
        }
        if (r.n_bytes != 24 || memcmp(r.data, pixels, 24) != 0 || r.channels != 2 || r.height != 3 || r.width != 4)
            pixels_equal = 0;
        for (int k = 0; k < 3; k++)
            if (r.n_labels != 3 || !same_bits(mtl_record_label(&r, k), labels[k]))
                labels_exact = 0;
    }
    CHECK_MSG(pixels_equal, "pixels read back equal");
    CHECK_MSG(labels_exact, "labels read back bit for bit (0.1f, -3.25e-7f, NaN for missing)");
    mtl_record r;
    CHECK_OK(mtl_db_get(db, 5, &r, &err), &err);
    CHECK(same_bits(mtl_record_label(&r, 2), -3.25e-7f));
    CHECK_OK(mtl_db_get(db, 7, &r, &err), &err);
    CHECK(same_bits(mtl_record_label(&r, 1), 0.1f * 7.0f));
    /* the train and test nets may open the same database: closing one leaves the other working */
    mtl_db *twin = NULL;
    CHECK_OK(mtl_db_open(path, &twin, &err), &err);
    mtl_db_close(twin);
    CHECK_OK(mtl_db_get(db, 11, &r, &err), &err);
    CHECK_INT(r.data[0], 11 * 7);
    CHECK_FAILS(mtl_db_get(db, N_RECORDS, &r, &err), &err, MTL_ERR_ARGUMENT, "out of range");
    CHECK_FAILS(mtl_db_get(db, -1, &r, &err), &err, MTL_ERR_ARGUMENT, "out of range");

    /* a new database at the same path replaces the old one only when finished; the open reader keeps
     * reading the old file */
    mtl_db_writer *w;
    CHECK_OK(mtl_db_writer_open(path, &w, &err), &err);
    mtl_db_writer_abort(w);
    CHECK(exists(path) && !exists(tmp_path("train_lmdb.partial")));
    CHECK_OK(write_db(path, 10, &err), &err);
    CHECK_OK(mtl_db_get(db, N_RECORDS - 1, &r, &err), &err);
    mtl_db_close(db);
    CHECK_OK(mtl_db_open(path, &db, &err), &err);
    if (db)
        CHECK_INT(mtl_db_meta_of(db)->count, 10);
    mtl_db_close(db);
    CHECK(!exists(tmp_path("train_lmdb.old")));
    /* a trailing slash names the same database */
    char slashed[600];
    snprintf(slashed, sizeof(slashed), "%s/", path);
    CHECK_OK(mtl_db_open(slashed, &db, &err), &err);
    mtl_db_close(db);
}

/* Reads every record and checks it; returns the number that differ from what write_db stored. */
static void *read_all_records(void *arg)
{
    mtl_db *db = arg;
    intptr_t wrong = 0;
    mtl_error err;
    for (int i = 0; i < N_RECORDS; i++) {
        uint8_t pixels[24];
        float labels[3];
        fill_sample(i, pixels, labels);
        mtl_record r;
        if (mtl_db_get(db, i, &r, &err) != MTL_OK || r.n_bytes != 24 || memcmp(r.data, pixels, 24) != 0 ||
            !same_bits(mtl_record_label(&r, 1), labels[1]))
            wrong++;
    }
    return (void *)wrong;
}

/* The prefetcher reads from its own thread while the net's thread may read too. */
static void test_db_two_threads(void)
{
    mtl_error err = {0};
    const char *path = tmp_path("threads_lmdb");
    CHECK_OK(write_db(path, N_RECORDS, &err), &err);
    mtl_db *db = NULL;
    CHECK_OK(mtl_db_open(path, &db, &err), &err);
    if (!db)
        return;
    pthread_t threads[2];
    for (int t = 0; t < 2; t++)
        pthread_create(&threads[t], NULL, read_all_records, db);
    intptr_t here = (intptr_t)read_all_records(db);
    for (int t = 0; t < 2; t++) {
        void *wrong;
        pthread_join(threads[t], &wrong);
        CHECK_INT((intptr_t)wrong, 0);
    }
    CHECK_INT(here, 0);
    mtl_db_close(db);
}

static void test_db_detection_meta(void)
{
    mtl_error err = {0};
    const char *path = tmp_path("det_lmdb");
    mtl_db_writer *w;
    CHECK_OK(mtl_db_writer_open(path, &w, &err), &err);
    if (!w)
        return;
    const float boxes[10] = {1, 2, 3, 4, 5, 10, 0.5f, 0.25f, 8, 9};
    uint8_t pixel = 7;
    mtl_record r = {.channels = 1, .height = 1, .width = 1, .n_boxes = 2, .boxes = boxes, .n_bytes = 1, .data = &pixel};
    CHECK_OK(mtl_db_writer_put(w, 0, &r, &err), &err);
    r.n_boxes = 0;
    CHECK_OK(mtl_db_writer_put(w, 1, &r, &err), &err);
    char *names[] = {"shirt", "boot", NULL};
    int ids[] = {1, 10};
    mtl_db_meta meta = {.count = 2, .label_names = names, .channels = 1, .height = 1, .width = 1, .has_boxes = 1,
                        .category_ids = ids};
    CHECK_OK(mtl_db_writer_finish(w, &meta, &err), &err);
    mtl_db *db;
    CHECK_OK(mtl_db_open(path, &db, &err), &err);
    if (!db)
        return;
    const mtl_db_meta *m = mtl_db_meta_of(db);
    CHECK_INT(m->has_boxes, 1);
    CHECK_INT(m->n_labels, 0);
    CHECK(m->label_names && strcmp(m->label_names[1], "boot") == 0 && m->label_names[2] == NULL);
    CHECK(m->category_ids && m->category_ids[0] == 1 && m->category_ids[1] == 10);
    CHECK_OK(mtl_db_get(db, 0, &r, &err), &err);
    CHECK_INT(r.n_boxes, 2);
    CHECK(same_bits(mtl_record_box(&r, 5), 10.0f) && same_bits(mtl_record_box(&r, 7), 0.25f));
    CHECK_OK(mtl_db_get(db, 1, &r, &err), &err);
    CHECK_INT(r.n_boxes, 0);
    mtl_db_close(db);
}

static void test_db_writer_errors(void)
{
    mtl_error err = {0};
    mtl_db_writer *w = NULL;
    /* abort leaves nothing behind */
    CHECK_OK(mtl_db_writer_open(tmp_path("aborted"), &w, &err), &err);
    uint8_t pixel = 1;
    mtl_record r = {.channels = 1, .height = 1, .width = 1, .n_bytes = 1, .data = &pixel};
    if (w)
        CHECK_OK(mtl_db_writer_put(w, 0, &r, &err), &err);
    mtl_db_writer_abort(w);
    CHECK(!exists(tmp_path("aborted")) && !exists(tmp_path("aborted.partial")));
    mtl_db_writer_abort(NULL);

    /* a stale partial directory from a killed run is replaced */
    mkdir(tmp_path("stale.partial"), 0777);
    fclose(fopen(tmp_path("stale.partial/data.mdb"), "w"));
    CHECK_OK(mtl_db_writer_open(tmp_path("stale"), &w, &err), &err);
    mtl_db_writer_abort(w);
    CHECK(!exists(tmp_path("stale.partial")));

    /* a count that does not match the records is refused, and finish cleans up */
    CHECK_OK(mtl_db_writer_open(tmp_path("miscount"), &w, &err), &err);
    if (w) {
        CHECK_OK(mtl_db_writer_put(w, 0, &r, &err), &err);
        mtl_db_meta meta = {.count = 2, .channels = 1, .height = 1, .width = 1};
        CHECK_FAILS(mtl_db_writer_finish(w, &meta, &err), &err, MTL_ERR_ARGUMENT, "says 2 records but 1");
    }
    CHECK(!exists(tmp_path("miscount")) && !exists(tmp_path("miscount.partial")));

    /* pixels that do not match the size */
    CHECK_OK(mtl_db_writer_open(tmp_path("badrec"), &w, &err), &err);
    mtl_record wrong = {.channels = 3, .height = 1, .width = 1, .n_bytes = 1, .data = &pixel};
    if (w)
        CHECK_FAILS(mtl_db_writer_put(w, 0, &wrong, &err), &err, MTL_ERR_ARGUMENT, "1 bytes of pixels for a 3x1x1");
    mtl_db_writer_abort(w);

    /* something that is not a database is never replaced */
    FILE *f = fopen(tmp_path("notes.txt"), "w");
    fputs("keep me", f);
    fclose(f);
    CHECK_FAILS(mtl_db_writer_open(tmp_path("notes.txt"), &w, &err), &err, MTL_ERR_IO, "not replacing it");
    CHECK(exists(tmp_path("notes.txt")));
    /* nor is a directory with other files */
    mkdir(tmp_path("mydir"), 0777);
    fclose(fopen(tmp_path("mydir/photo.jpg"), "w"));
    CHECK_FAILS(mtl_db_writer_open(tmp_path("mydir"), &w, &err), &err, MTL_ERR_IO, "other than data.mdb");
    CHECK(exists(tmp_path("mydir/photo.jpg")));
    /* an output whose parent cannot hold a directory */
    CHECK_FAILS(mtl_db_writer_open(tmp_path("notes.txt/db"), &w, &err), &err, MTL_ERR_IO, "notes.txt/db.partial");
}

/* Builds a raw LMDB by hand, with whatever records and metadata a test needs. */
static void raw_lmdb(const char *path, int n_keys, const int *keys, const char *meta)
{
    mkdir(path, 0777);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_mapsize(env, (size_t)16 << 20);
    if (mdb_env_open(env, path, 0, 0666) != 0) {
        CHECK_MSG(0, "cannot build the test LMDB %s", path);
        mdb_env_close(env);
        return;
    }
    mdb_txn_begin(env, NULL, 0, &txn);
    mdb_dbi_open(txn, NULL, 0, &dbi);
    uint8_t pixel = 9;
    mtl_record r = {.channels = 1, .height = 1, .width = 1, .n_bytes = 1, .data = &pixel};
    uint8_t buf[64];
    mtl_record_encode(&r, buf);
    for (int i = 0; i < n_keys; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%010d", keys[i]);
        MDB_val k = {strlen(key), key}, v = {mtl_record_size(&r), buf};
        mdb_put(txn, dbi, &k, &v, 0);
    }
    if (meta) {
        MDB_val k = {strlen(MTL_DB_META_KEY), (void *)MTL_DB_META_KEY}, v = {strlen(meta), (void *)meta};
        mdb_put(txn, dbi, &k, &v, 0);
    }
    mdb_txn_commit(txn);
    mdb_env_close(env);
}

static void test_db_reader_errors(void)
{
    mtl_error err = {0};
    mtl_db *db = NULL;
    CHECK_FAILS(mtl_db_open(tmp_path("nowhere_lmdb"), &db, &err), &err, MTL_ERR_NOT_FOUND,
                "nowhere_lmdb' does not exist");
    CHECK(db == NULL);
    mkdir(tmp_path("left.partial"), 0777);
    CHECK_FAILS(mtl_db_open(tmp_path("left"), &db, &err), &err, MTL_ERR_NOT_FOUND, "did not finish");

    mkdir(tmp_path("empty_dir"), 0777);
    CHECK_FAILS(mtl_db_open(tmp_path("empty_dir"), &db, &err), &err, MTL_ERR_CORRUPT, "not an LMDB database");
    CHECK_FAILS(mtl_db_open(tmp_path("notes.txt"), &db, &err), &err, MTL_ERR_CORRUPT, "is a directory holding");

    mkdir(tmp_path("garbage"), 0777);
    FILE *f = fopen(tmp_path("garbage/data.mdb"), "w");
    for (int i = 0; i < 20000; i++)
        fputc((i * 37) & 0xff, f);
    fclose(f);
    CHECK_FAILS(mtl_db_open(tmp_path("garbage"), &db, &err), &err, MTL_ERR_CORRUPT, "not a readable LMDB");

    /* truncated after writing: refused before LMDB touches a page past the end of the file */
    const char *path = tmp_path("cut_lmdb");
    CHECK_OK(write_db(path, 500, &err), &err);
    const char *data = tmp_path("cut_lmdb/data.mdb");
    struct stat st;
    stat(data, &st);
    CHECK(truncate(data, st.st_size / 2) == 0);
    CHECK_FAILS(mtl_db_open(path, &db, &err), &err, MTL_ERR_CORRUPT, "is truncated");
    CHECK(strstr(err.message, "cut_lmdb") != NULL);
    CHECK(truncate(data, 100) == 0);
    CHECK_FAILS(mtl_db_open(path, &db, &err), &err, MTL_ERR_CORRUPT, "cut_lmdb");
    CHECK(truncate(data, 0) == 0);
    CHECK_FAILS(mtl_db_open(path, &db, &err), &err, MTL_ERR_CORRUPT, "truncated");

    /* a record whose bytes were damaged after writing */
    path = tmp_path("damaged_lmdb");
    CHECK_OK(write_db(path, 20, &err), &err);
    data = tmp_path("damaged_lmdb/data.mdb");
    stat(data, &st);
    uint8_t *bytes = malloc((size_t)st.st_size);
    f = fopen(data, "r+b");
    size_t got = fread(bytes, 1, (size_t)st.st_size, f);
    size_t damaged_at = 0;
    for (size_t i = 0; i + 4 <= got && !damaged_at; i++)
        if (memcmp(bytes + i, "MTLR", 4) == 0)
            damaged_at = i;
    CHECK(damaged_at > 0);
    fseek(f, (long)damaged_at, SEEK_SET);
    fputs("XXXX", f);
    fclose(f);
    free(bytes);
    CHECK_OK(mtl_db_open(path, &db, &err), &err);
    if (db) {
        mtl_record r;
        int refused = 0;
        for (int i = 0; i < 20; i++)
            if (mtl_db_get(db, i, &r, &err) != MTL_OK)
                refused = strstr(err.message, "not an mtl record") != NULL && strstr(err.message, "damaged_lmdb");
        CHECK_MSG(refused, "the damaged record is refused: %s", err.message);
        mtl_db_close(db);
    }

    const int keys[3] = {0, 1, 2};
    raw_lmdb(tmp_path("nometa"), 3, keys, NULL);
    CHECK_FAILS(mtl_db_open(tmp_path("nometa"), &db, &err), &err, MTL_ERR_CORRUPT, "no metadata record");
    raw_lmdb(tmp_path("badjson"), 3, keys, "{\"format\": \"mtl-lmdb\", count: 3");
    CHECK_FAILS(mtl_db_open(tmp_path("badjson"), &db, &err), &err, MTL_ERR_CORRUPT, "not valid JSON");
    raw_lmdb(tmp_path("badfield"), 3, keys,
             "{\"format\":\"mtl-lmdb\",\"version\":1,\"count\":-3,\"n_labels\":0,\"channels\":1,\"height\":1,"
             "\"width\":1}");
    CHECK_FAILS(mtl_db_open(tmp_path("badfield"), &db, &err), &err, MTL_ERR_CORRUPT, "'count'");
    raw_lmdb(tmp_path("foreign"), 3, keys, "{\"format\":\"other\"}");
    CHECK_FAILS(mtl_db_open(tmp_path("foreign"), &db, &err), &err, MTL_ERR_CORRUPT, "format");
    raw_lmdb(tmp_path("miscount"), 3, keys,
             "{\"format\":\"mtl-lmdb\",\"version\":1,\"count\":5,\"n_labels\":0,\"channels\":1,\"height\":1,"
             "\"width\":1}");
    CHECK_FAILS(mtl_db_open(tmp_path("miscount"), &db, &err), &err, MTL_ERR_CORRUPT, "says 5 records but it holds 3");
    raw_lmdb(tmp_path("badnames"), 3, keys,
             "{\"format\":\"mtl-lmdb\",\"version\":1,\"count\":3,\"n_labels\":2,\"label_names\":[\"a\"],"
             "\"channels\":1,\"height\":1,\"width\":1}");
    CHECK_FAILS(mtl_db_open(tmp_path("badnames"), &db, &err), &err, MTL_ERR_CORRUPT, "list of 2 names");

    /* the right number of keys, but one of them is not a record index */
    const int gap[3] = {0, 1, 7};
    raw_lmdb(tmp_path("gap"), 3, gap,
             "{\"format\":\"mtl-lmdb\",\"version\":1,\"count\":3,\"n_labels\":0,\"channels\":1,\"height\":1,"
             "\"width\":1}");
    CHECK_OK(mtl_db_open(tmp_path("gap"), &db, &err), &err);
    if (db) {
        mtl_record r;
        CHECK_OK(mtl_db_get(db, 1, &r, &err), &err);
        CHECK_INT(r.data[0], 9);
        CHECK_FAILS(mtl_db_get(db, 2, &r, &err), &err, MTL_ERR_CORRUPT, "record 2 is missing");
        mtl_db_close(db);
    }
}

/* ---- images ---- */

static void test_image_errors(void)
{
    mtl_error err = {0};
    mtl_image img;
    CHECK_FAILS(mtl_image_load(tmp_path("missing.png"), 0, &img, &err), &err, MTL_ERR_NOT_FOUND, "missing.png");
    FILE *f = fopen(tmp_path("bad.png"), "wb");
    fputs("\x89PNG\r\n\x1a\nthis is not a png", f);
    fclose(f);
    CHECK_FAILS(mtl_image_load(tmp_path("bad.png"), 0, &img, &err), &err, MTL_ERR_CORRUPT, "bad.png");
    CHECK(strlen(err.message) > strlen(tmp_path("bad.png")) + 30); /* the decoder's reason follows */
    CHECK_FAILS(mtl_image_decode((const uint8_t *)"abc", 3, 0, "record 3 of 'db'", &img, &err), &err,
                MTL_ERR_CORRUPT, "record 3 of 'db'");
    CHECK_FAILS(mtl_image_load(tmp_dir, 0, &img, &err), &err, MTL_ERR_IO, "not a regular file");
    int w, h, c;
    CHECK_FAILS(mtl_image_probe(tmp_path("bad.png"), &w, &h, &c, &err), &err, MTL_ERR_CORRUPT, "bad.png");
    CHECK_FAILS(mtl_image_probe(tmp_path("missing.png"), &w, &h, &c, &err), &err, MTL_ERR_NOT_FOUND, "missing.png");
}

static void test_image_resize_and_chw(void)
{
    mtl_error err = {0};
    /* enlarging is bilinear between pixel centres: output x maps to input (x + 0.5) / 2 - 0.5, so
     * 0 100 becomes 0 (clamped) 25 75 100 (clamped) */
    uint8_t row[2] = {0, 100};
    mtl_image in = {.width = 2, .height = 1, .channels = 1, .pixels = row}, out;
    CHECK_OK(mtl_image_resize(&in, 4, 1, &out, &err), &err);
    const uint8_t want_row[4] = {0, 25, 75, 100};
    CHECK(out.width == 4 && out.height == 1 && memcmp(out.pixels, want_row, 4) == 0);
    mtl_image_free(&out);

    /* the same in two dimensions: [[0, 100], [100, 200]] to 4x4, rows mixed by 1, 3/4 1/4, 1/4 3/4, 1 */
    uint8_t square[4] = {0, 100, 100, 200};
    in = (mtl_image){.width = 2, .height = 2, .channels = 1, .pixels = square};
    CHECK_OK(mtl_image_resize(&in, 4, 4, &out, &err), &err);
    const uint8_t want_square[16] = {0, 25, 75, 100, 25, 50, 100, 125, 75, 100, 150, 175, 100, 125, 175, 200};
    int same = memcmp(out.pixels, want_square, 16) == 0;
    CHECK_MSG(same, "2x2 -> 4x4 bilinear");
    if (!same)
        for (int i = 0; i < 16; i++)
            fprintf(stderr, "  [%d] %d (want %d)\n", i, out.pixels[i], want_square[i]);
    mtl_image_free(&out);

    /* shrinking by 2 averages with a tent twice as wide: weights 1/8 3/8 3/8 1/8 around each output
     * pixel, the border repeated: 0 80 160 240 -> 0*(1/8+3/8) + 80*3/8 + 160/8 = 50 and
     * 80/8 + 160*3/8 + 240*(3/8+1/8) = 190 */
    uint8_t wide[4] = {0, 80, 160, 240};
    in = (mtl_image){.width = 4, .height = 1, .channels = 1, .pixels = wide};
    CHECK_OK(mtl_image_resize(&in, 2, 1, &out, &err), &err);
    CHECK_MSG(out.pixels[0] == 50 && out.pixels[1] == 190, "4 -> 2: %d %d, expected 50 190", out.pixels[0],
              out.pixels[1]);
    mtl_image_free(&out);

    /* colour channels are resized independently; the same size is a copy */
    uint8_t rgb[6] = {0, 10, 200, 100, 30, 0};
    in = (mtl_image){.width = 2, .height = 1, .channels = 3, .pixels = rgb};
    CHECK_OK(mtl_image_resize(&in, 4, 1, &out, &err), &err);
    const uint8_t want_rgb[12] = {0, 10, 200, 25, 15, 150, 75, 25, 50, 100, 30, 0};
    CHECK(memcmp(out.pixels, want_rgb, 12) == 0);
    mtl_image_free(&out);
    CHECK_OK(mtl_image_resize(&in, 2, 1, &out, &err), &err);
    CHECK(out.pixels != rgb && memcmp(out.pixels, rgb, 6) == 0);
    mtl_image_free(&out);
    CHECK_FAILS(mtl_image_resize(&in, 0, 3, &out, &err), &err, MTL_ERR_ARGUMENT, "0x3");

    /* HWC -> CHW: 2x2 RGB, pixel p has (10p, 10p+1, 10p+2) */
    uint8_t hwc[12], chw[12];
    for (int p = 0; p < 4; p++)
        for (int k = 0; k < 3; k++)
            hwc[3 * p + k] = (uint8_t)(10 * p + k);
    in = (mtl_image){.width = 2, .height = 2, .channels = 3, .pixels = hwc};
    mtl_image_to_chw(&in, chw);
    const uint8_t want_chw[12] = {0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32};
    CHECK(memcmp(chw, want_chw, 12) == 0);
    uint8_t grey[3] = {5, 6, 7}, grey_out[3];
    in = (mtl_image){.width = 3, .height = 1, .channels = 1, .pixels = grey};
    mtl_image_to_chw(&in, grey_out);
    CHECK(memcmp(grey, grey_out, 3) == 0);
}

static void test_png_round_trip(void)
{
    mtl_error err = {0};
    uint8_t pixels[5 * 3 * 3];
    for (int i = 0; i < 45; i++)
        pixels[i] = (uint8_t)(i * 5 + 3);
    mtl_image img = {.width = 5, .height = 3, .channels = 3, .pixels = pixels}, back;
    const char *path = tmp_path("out.png");
    CHECK_OK(mtl_image_write_png(path, &img, &err), &err);
    CHECK(!exists(tmp_path("out.png.tmp")));
    CHECK_OK(mtl_image_load(path, 0, &back, &err), &err);
    CHECK(back.width == 5 && back.height == 3 && back.channels == 3 && memcmp(back.pixels, pixels, 45) == 0);
    mtl_image_free(&back);
    int w, h, c;
    CHECK_OK(mtl_image_probe(path, &w, &h, &c, &err), &err);
    CHECK(w == 5 && h == 3 && c == 3);
    /* forced grey uses stb's luma weights (77 R + 150 G + 29 B) / 256 */
    CHECK_OK(mtl_image_load(path, 1, &back, &err), &err);
    CHECK_INT(back.channels, 1);
    CHECK_INT(back.pixels[0], (77 * 3 + 150 * 8 + 29 * 13) >> 8);
    mtl_image_free(&back);

    img.channels = 1;
    uint8_t *bytes;
    size_t size;
    CHECK_OK(mtl_image_encode_png(&img, &bytes, &size, &err), &err);
    CHECK(size > 8 && memcmp(bytes, "\x89PNG", 4) == 0);
    CHECK_OK(mtl_image_probe_bytes(bytes, size, "grey", &w, &h, &c, &err), &err);
    CHECK(w == 5 && h == 3 && c == 1);
    CHECK_OK(mtl_image_decode(bytes, size, 0, "grey", &back, &err), &err);
    CHECK(back.channels == 1 && memcmp(back.pixels, pixels, 15) == 0);
    mtl_image_free(&back);
    CHECK_OK(mtl_image_decode(bytes, size, 3, "grey", &back, &err), &err);
    CHECK(back.channels == 3 && back.pixels[3] == pixels[1] && back.pixels[5] == pixels[1]);
    mtl_image_free(&back);
    free(bytes);

    CHECK_FAILS(mtl_image_write_png(tmp_path("no/such/dir/x.png"), &img, &err), &err, MTL_ERR_IO, "no/such/dir");
    img.channels = 2;
    CHECK_FAILS(mtl_image_write_png(path, &img, &err), &err, MTL_ERR_ARGUMENT, "2 channels");
}

int main(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/mtl_test_convert_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_record_round_trip();
    test_db_round_trip();
    test_db_two_threads();
    test_db_detection_meta();
    test_db_writer_errors();
    test_db_reader_errors();
    test_image_errors();
    test_image_resize_and_chw();
    test_png_round_trip();
    test_remove_tree(tmp_dir);
    return check_finish();
}
