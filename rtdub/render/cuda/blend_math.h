// Per-pixel math of the paste-back (rtdub/render/blend.py::paste), shared by the CUDA kernel
// (blend.cu) and the CPU harness (harness.cpp) so that the tests can check the very code the
// GPU runs against the numpy/OpenCV reference.
//
// The sampling reproduces cv2.warpAffine(INTER_LINEAR) bit for bit:
//   * a destination pixel (x, y) maps to the source through the 2x3 matrix m (destination ->
//     source, i.e. the matrix cv2 gets after inverting the one it was given), computed the way
//     cv2's WarpAffineInvoker does it: 10-bit fixed point, rounded to 1/32 pixel;
//   * the bilinear weights are the products of 1-D weights k/32 (exact in float);
//   * the four taps are summed in float32 in cv2's order.
// The crop is sampled with BORDER_REPLICATE, the mask with BORDER_CONSTANT 0, then
//   out = clip(rint(dst * (1 - a) + gen * a), 0, 255) wherever a > 0.
// Float operations are written through RT_F*/RT_D* so that nvcc cannot fuse them into FMAs
// (the CPU harness is compiled with -ffp-contract=off for the same reason).
#ifndef RTDUB_BLEND_MATH_H
#define RTDUB_BLEND_MATH_H

#ifdef __CUDACC__
#define RT_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define RT_HD static inline
#endif

#if defined(__CUDA_ARCH__)
#define RT_FMUL(a, b) __fmul_rn((a), (b))
#define RT_FADD(a, b) __fadd_rn((a), (b))
#define RT_DMUL(a, b) __dmul_rn((a), (b))
#define RT_DADD(a, b) __dadd_rn((a), (b))
#else
#define RT_FMUL(a, b) ((a) * (b))
#define RT_FADD(a, b) ((a) + (b))
#define RT_DMUL(a, b) ((a) * (b))
#define RT_DADD(a, b) ((a) + (b))
#endif

// crop memory layouts
#define RT_LAYOUT_HWC_F32 0  // (S, S, 3) float32 in 0..255 (what blend.paste gets)
#define RT_LAYOUT_CHW_UNIT 1 // (3, S, S) float32 in [0, 1], the generator's raw output:
                             // clipped to [0, 1] and scaled by 255 as the pipeline does
#define RT_LAYOUT_HWC_U8 2   // (S, S, 3) uint8

#define RT_AB_BITS 10
#define RT_INTER_BITS 5
#define RT_TAB 32

struct RtParams {
    const void* crop;
    int layout;
    int size;          // S: the crop and the mask are S x S
    const float* mask; // (S, S) feathered blend weight (FaceMask.soft)
    double m[6];       // destination grid pixel -> crop pixel
    float delta[3];    // colour offset added to every crop sample (blend.match_colour)
};

struct RtTap {
    int ix, iy; // top-left source pixel
    int fx, fy; // fractions in 1/32
};

// cv2 WarpAffineInvoker: X = (round((m1*y + m2) * 2^10) + round(m0*x * 2^10) + 16) >> 5
RT_HD RtTap rt_map(const double* m, int x, int y) {
    const double scale = (double)(1 << RT_AB_BITS);
    const int round_delta = (1 << RT_AB_BITS) / RT_TAB / 2;
    int adelta = (int)rint(RT_DMUL(RT_DMUL(m[0], (double)x), scale));
    int bdelta = (int)rint(RT_DMUL(RT_DMUL(m[3], (double)x), scale));
    int x0 = (int)rint(RT_DMUL(RT_DADD(RT_DMUL(m[1], (double)y), m[2]), scale)) + round_delta;
    int y0 = (int)rint(RT_DMUL(RT_DADD(RT_DMUL(m[4], (double)y), m[5]), scale)) + round_delta;
    int X = (x0 + adelta) >> (RT_AB_BITS - RT_INTER_BITS);
    int Y = (y0 + bdelta) >> (RT_AB_BITS - RT_INTER_BITS);
    RtTap t;
    t.ix = X >> RT_INTER_BITS;
    t.iy = Y >> RT_INTER_BITS;
    t.fx = X & (RT_TAB - 1);
    t.fy = Y & (RT_TAB - 1);
    return t;
}

// 2-D weights w00, w01, w10, w11 (row-major over the 2x2 taps); exact in float
RT_HD void rt_weights(const RtTap& t, float* w) {
    float tx = RT_FMUL((float)t.fx, 1.0f / RT_TAB);
    float ty = RT_FMUL((float)t.fy, 1.0f / RT_TAB);
    float cx0 = 1.0f - tx, cy0 = 1.0f - ty;
    w[0] = RT_FMUL(cy0, cx0);
    w[1] = RT_FMUL(cy0, tx);
    w[2] = RT_FMUL(ty, cx0);
    w[3] = RT_FMUL(ty, tx);
}

RT_HD float rt_tap_sum(float v0, float v1, float v2, float v3, const float* w) {
    return RT_FADD(RT_FADD(RT_FADD(RT_FMUL(v0, w[0]), RT_FMUL(v1, w[1])), RT_FMUL(v2, w[2])), RT_FMUL(v3, w[3]));
}

RT_HD int rt_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// the feathered mask at a tap position, BORDER_CONSTANT 0
RT_HD float rt_mask_at(const float* mask, int s, int row, int col) {
    return (row >= 0 && row < s && col >= 0 && col < s) ? mask[row * s + col] : 0.0f;
}

RT_HD float rt_sample_mask(const RtParams& p, const RtTap& t, const float* w) {
    int s = p.size;
    return rt_tap_sum(rt_mask_at(p.mask, s, t.iy, t.ix), rt_mask_at(p.mask, s, t.iy, t.ix + 1),
                      rt_mask_at(p.mask, s, t.iy + 1, t.ix), rt_mask_at(p.mask, s, t.iy + 1, t.ix + 1), w);
}

// one crop channel at an in-range pixel, colour offset included
RT_HD float rt_crop_at(const RtParams& p, int row, int col, int c) {
    int s = p.size;
    float v;
    if (p.layout == RT_LAYOUT_CHW_UNIT) {
        v = ((const float*)p.crop)[(c * s + row) * s + col];
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        v = RT_FMUL(v, 255.0f);
    } else if (p.layout == RT_LAYOUT_HWC_U8) {
        v = (float)((const unsigned char*)p.crop)[(row * s + col) * 3 + c];
    } else {
        v = ((const float*)p.crop)[(row * s + col) * 3 + c];
    }
    return RT_FADD(v, p.delta[c]);
}

// the colour-corrected crop at a tap position, BORDER_REPLICATE; rgb[3] in 0..255 (unclipped)
RT_HD void rt_sample_crop(const RtParams& p, const RtTap& t, const float* w, float* rgb) {
    int s1 = p.size - 1;
    int c0 = rt_clampi(t.ix, 0, s1), c1 = rt_clampi(t.ix + 1, 0, s1);
    int r0 = rt_clampi(t.iy, 0, s1), r1 = rt_clampi(t.iy + 1, 0, s1);
    for (int c = 0; c < 3; ++c) {
        rgb[c] = rt_tap_sum(rt_crop_at(p, r0, c0, c), rt_crop_at(p, r0, c1, c), rt_crop_at(p, r1, c0, c),
                            rt_crop_at(p, r1, c1, c), w);
    }
}

// clip(rint(dst * (1 - a) + g * a), 0, 255)
RT_HD unsigned char rt_mix(unsigned char dst, float g, float a) {
    float m = RT_FADD(RT_FMUL((float)dst, 1.0f - a), RT_FMUL(g, a));
    m = rintf(m);
    m = m < 0.0f ? 0.0f : (m > 255.0f ? 255.0f : m);
    return (unsigned char)m;
}

// BT.601 limited range ("studio swing") from 0..255 RGB, as swscale's yuv420p/nv12 output
#define RT_YR 0.25678824f
#define RT_YG 0.50412941f
#define RT_YB 0.09790588f
#define RT_UR -0.14822353f
#define RT_UG -0.29099216f
#define RT_UB 0.43921569f
#define RT_VR 0.43921569f
#define RT_VG -0.36778824f
#define RT_VB -0.07142745f

RT_HD float rt_dot3(float a, float b, float c, const float* rgb) {
    return RT_FADD(RT_FADD(RT_FMUL(a, rgb[0]), RT_FMUL(b, rgb[1])), RT_FMUL(c, rgb[2]));
}

RT_HD float rt_luma(const float* rgb) { return RT_FADD(16.0f, rt_dot3(RT_YR, RT_YG, RT_YB, rgb)); }
RT_HD float rt_cb(const float* rgb) { return RT_FADD(128.0f, rt_dot3(RT_UR, RT_UG, RT_UB, rgb)); }
RT_HD float rt_cr(const float* rgb) { return RT_FADD(128.0f, rt_dot3(RT_VR, RT_VG, RT_VB, rgb)); }

// ---- the per-pixel entry points: (x, y) is the pixel's position in its grid's box ----

// RGB(X) pixel at px (px[0..2] = R, G, B); returns 1 if the pixel was blended
RT_HD int rt_blend_rgb_pixel(unsigned char* px, int x, int y, const RtParams& p) {
    RtTap t = rt_map(p.m, x, y);
    float w[4];
    rt_weights(t, w);
    float a = rt_sample_mask(p, t, w);
    if (!(a > 0.0f)) return 0;
    float rgb[3];
    rt_sample_crop(p, t, w, rgb);
    px[0] = rt_mix(px[0], rgb[0], a);
    px[1] = rt_mix(px[1], rgb[1], a);
    px[2] = rt_mix(px[2], rgb[2], a);
    return 1;
}

// luma sample of a 4:2:0 frame (p.m maps the luma box)
RT_HD int rt_blend_luma_pixel(unsigned char* yp, int x, int y, const RtParams& p) {
    RtTap t = rt_map(p.m, x, y);
    float w[4];
    rt_weights(t, w);
    float a = rt_sample_mask(p, t, w);
    if (!(a > 0.0f)) return 0;
    float rgb[3];
    rt_sample_crop(p, t, w, rgb);
    *yp = rt_mix(*yp, rt_luma(rgb), a);
    return 1;
}

// chroma pair of a 4:2:0 frame (p.m maps the chroma box: the mask and the crop are sampled at
// the chroma sample's own position, the centre of its 2x2 luma block)
RT_HD int rt_blend_chroma_pixel(unsigned char* up, unsigned char* vp, int x, int y, const RtParams& p) {
    RtTap t = rt_map(p.m, x, y);
    float w[4];
    rt_weights(t, w);
    float a = rt_sample_mask(p, t, w);
    if (!(a > 0.0f)) return 0;
    float rgb[3];
    rt_sample_crop(p, t, w, rgb);
    *up = rt_mix(*up, rt_cb(rgb), a);
    *vp = rt_mix(*vp, rt_cr(rgb), a);
    return 1;
}

#endif // RTDUB_BLEND_MATH_H
