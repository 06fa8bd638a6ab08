// CPU harness for the paste-back kernels: runs the very per-pixel functions of blend_math.h
// (the ones blend.cu runs on the GPU) over a whole box, one loop iteration per CUDA thread.
// Built by rtdub/render/cuda/harness.py with
//     g++ -O2 -ffp-contract=off -shared -fPIC harness.cpp -o librtdub_blend_harness.so
// and loaded with ctypes, so the tests compare the kernel math with blend.paste on machines
// without a GPU. Arguments mirror the kernels'; m and delta point to 6 doubles / 3 floats.
#include "blend_math.h"

static RtParams make_params(const void* crop, int layout, int size, const float* mask, const double* m,
                            const float* delta) {
    RtParams p;
    p.crop = crop;
    p.layout = layout;
    p.size = size;
    p.mask = mask;
    for (int i = 0; i < 6; ++i) p.m[i] = m[i];
    for (int c = 0; c < 3; ++c) p.delta[c] = delta[c];
    return p;
}

extern "C" {

int rtdub_harness_abi(void) { return 1; }

// returns the number of blended pixels
int rtdub_harness_blend_rgb(unsigned char* box, int pitch, int pix_stride, int width, int height, const void* crop,
                            int layout, int size, const float* mask, const double* m, const float* delta) {
    RtParams p = make_params(crop, layout, size, mask, m, delta);
    int n = 0;
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) n += rt_blend_rgb_pixel(box + (long)y * pitch + (long)x * pix_stride, x, y, p);
    return n;
}

int rtdub_harness_blend_luma(unsigned char* box, int pitch, int width, int height, const void* crop, int layout,
                             int size, const float* mask, const double* m, const float* delta) {
    RtParams p = make_params(crop, layout, size, mask, m, delta);
    int n = 0;
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) n += rt_blend_luma_pixel(box + (long)y * pitch + x, x, y, p);
    return n;
}

int rtdub_harness_blend_chroma(unsigned char* u_box, unsigned char* v_box, int pitch, int step, int width,
                               int height, const void* crop, int layout, int size, const float* mask,
                               const double* m, const float* delta) {
    RtParams p = make_params(crop, layout, size, mask, m, delta);
    int n = 0;
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) {
            long off = (long)y * pitch + (long)x * step;
            n += rt_blend_chroma_pixel(u_box + off, v_box + off, x, y, p);
        }
    return n;
}

}  // extern "C"
