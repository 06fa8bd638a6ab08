// Paste-back kernels: one thread per destination pixel of the face region's bounding box.
//
// Each thread maps its pixel into the generated S x S crop (inverse affine, bilinear, exactly
// as cv2.warpAffine), samples the feathered mask the same way, adds the colour offset and
// blends into the frame in place where the mask weight is above zero. The math lives in
// blend_math.h, which the CPU harness (harness.cpp) compiles too.
//
// Pointers are to the top-left pixel of the box (not of the frame); pitch is in bytes.
// Matrices map the box's own pixel grid to crop pixels (rtdub/render/cuda/plan.py computes them).
#include "blend_math.h"

__device__ __forceinline__ RtParams rt_params(const void* crop, int layout, int size, const float* mask, double m0,
                                              double m1, double m2, double m3, double m4, double m5, float d0,
                                              float d1, float d2) {
    RtParams p;
    p.crop = crop;
    p.layout = layout;
    p.size = size;
    p.mask = mask;
    p.m[0] = m0;
    p.m[1] = m1;
    p.m[2] = m2;
    p.m[3] = m3;
    p.m[4] = m4;
    p.m[5] = m5;
    p.delta[0] = d0;
    p.delta[1] = d1;
    p.delta[2] = d2;
    return p;
}

// packed RGB (pix_stride 3) or RGBX (pix_stride 4) frames
extern "C" __global__ void rtdub_blend_rgb(unsigned char* box, int pitch, int pix_stride, int width, int height,
                                           const void* __restrict__ crop, int layout, int size,
                                           const float* __restrict__ mask, double m0, double m1, double m2,
                                           double m3, double m4, double m5, float d0, float d1, float d2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    RtParams p = rt_params(crop, layout, size, mask, m0, m1, m2, m3, m4, m5, d0, d1, d2);
    rt_blend_rgb_pixel(box + (size_t)y * pitch + (size_t)x * pix_stride, x, y, p);
}

// the luma plane of an NV12 / YUV420 (I420) frame
extern "C" __global__ void rtdub_blend_luma(unsigned char* box, int pitch, int width, int height,
                                            const void* __restrict__ crop, int layout, int size,
                                            const float* __restrict__ mask, double m0, double m1, double m2,
                                            double m3, double m4, double m5, float d0, float d1, float d2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    RtParams p = rt_params(crop, layout, size, mask, m0, m1, m2, m3, m4, m5, d0, d1, d2);
    rt_blend_luma_pixel(box + (size_t)y * pitch + x, x, y, p);
}

// the chroma planes: NV12 has u_box = uv, v_box = uv + 1, step 2; I420 has two planes, step 1
extern "C" __global__ void rtdub_blend_chroma(unsigned char* u_box, unsigned char* v_box, int pitch, int step,
                                              int width, int height, const void* __restrict__ crop, int layout,
                                              int size, const float* __restrict__ mask, double m0, double m1,
                                              double m2, double m3, double m4, double m5, float d0, float d1,
                                              float d2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    RtParams p = rt_params(crop, layout, size, mask, m0, m1, m2, m3, m4, m5, d0, d1, d2);
    size_t off = (size_t)y * pitch + (size_t)x * step;
    rt_blend_chroma_pixel(u_box + off, v_box + off, x, y, p);
}
