/* One sample in an mtl LMDB: image (raw pixels or encoded bytes), a fixed-length label vector and
 * an optional box list. The byte layout (little-endian) is documented in docs/data-format.md:
 *
 *   u32 magic "MTLR"   u16 version (1)   u16 flags (bit 0: encoded image bytes)
 *   u32 channels, height, width          (raw: the pixel planes; encoded: the decoded size)
 *   u32 n_labels       f32 labels[n_labels]      NaN = missing (MTL_LABEL_MISSING)
 *   u32 n_boxes        f32 boxes[n_boxes][5]     class, x, y, w, h (pixels, COCO style)
 *   u32 n_bytes        u8 data[n_bytes]          raw: CHW planes; encoded: PNG/JPEG file bytes
 *
 * Decoding points into the record's bytes (an LMDB memory map) without copying. */
#ifndef MTL_DATA_RECORD_H
#define MTL_DATA_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define MTL_RECORD_MAGIC 0x524c544du /* "MTLR" read as a little-endian u32 */
#define MTL_RECORD_VERSION 1
#define MTL_RECORD_ENCODED 1u

typedef struct mtl_record {
    uint32_t flags;
    int channels, height, width;
    int n_labels;
    const float *labels;  /* may be unaligned in a map: read with memcpy (mtl_record_label) */
    int n_boxes;
    const float *boxes;   /* n_boxes * 5, same caveat */
    size_t n_bytes;
    const uint8_t *data;
} mtl_record;

/* Bytes needed to encode r. */
size_t mtl_record_size(const mtl_record *r);
/* Encodes r into buf (mtl_record_size(r) bytes). */
void mtl_record_encode(const mtl_record *r, uint8_t *buf);
/* Parses and checks a record (magic, version, sizes against `size`); `what` names it in errors
 * (for example "record 1234 of 'train_lmdb'"). */
mtl_status mtl_record_decode(const uint8_t *buf, size_t size, const char *what, mtl_record *out, mtl_error *err);
/* Label i / box value i, safe for unaligned storage. */
float mtl_record_label(const mtl_record *r, int i);
float mtl_record_box(const mtl_record *r, int i);

#endif
