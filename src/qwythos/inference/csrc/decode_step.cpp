// One decode step of a pathway model on CPU: B rows, one new token each, every layer, the logits.
//
// The reference is PathwayLM.forward (model/transformer.py, model/block.py); this computes the same
// function for T = 1 with a KV cache. Decoding one token is bound by reading the weights: they are streamed
// once per step by stream_rows below; everything else (norms, rotary, attention over the cache, the router
// and gate, the LoRA deltas) is a few plain loops here instead of ~70 small ATen kernels per layer, each of
// which costs microseconds of dispatch from Python.
//
// Weights and the KV cache are fp32 or bf16 (W below: float, or uint16_t holding bf16 bits); activations
// are fp32 throughout, so a bf16 model reads half the bytes and rounds only its weights and cached keys and
// values (the torch forward of a bf16 model also rounds every activation).
//
// Layer weights arrive as one flat list, kPerLayer entries per layer (native.py's _layer_weights):
//   0 input norm (H)   1 qkv (Q+2K, H)   2 qkv bias or empty   3 o (H, Q)   4 o bias or empty
//   5 post norm (H)    6 router (P, H)
//   LoRA pathways:  7 base gate_up (2I, H)  8 base down (H, I)  9 A gate_up (P, 2, r, H)
//                   10 B gate_up (P, 2, I, r)  11 A down (P, r, I)  12 B down (P, H, r)
//   dense experts:  7 gate_up (P, 2I, H)    8 down (P, H, I)    9-12 empty
// followed by three globals: embedding (V, H), final norm (H), lm_head (V, H).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kPerLayer = 13;
enum Mode : int64_t { kSoft = 0, kTop1 = 1, kForce = 2 };

inline float f32(float v) { return v; }
inline float f32(uint16_t v) {  // bf16 bits -> float
  const uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename W>
W stored(float v);
template <>
inline float stored<float>(float v) { return v; }
template <>
inline uint16_t stored<uint16_t>(float v) { return c10::BFloat16(v).x; }  // round to nearest even, as torch

template <typename W>
inline const W* ptr(const at::Tensor& t) { return reinterpret_cast<const W*>(t.data_ptr()); }
template <typename W>
inline W* mut(at::Tensor& t) { return reinterpret_cast<W*>(t.data_ptr()); }

template <typename W>
inline float dot(const float* a, const W* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * f32(b[i]);
  return acc;
}

// out = w * x / sqrt(mean(x^2) + eps), row by row
template <typename W>
void rms_norm(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor& out) {
  const int64_t B = x.size(0), H = x.size(1);
  const W* wp = ptr<W>(w);
  for (int64_t b = 0; b < B; ++b) {
    const float* xp = x.data_ptr<float>() + b * H;
    float* op = out.data_ptr<float>() + b * H;
    const float r = 1.f / std::sqrt(dot(xp, xp, H) / H + static_cast<float>(eps));
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) op[i] = f32(wp[i]) * (xp[i] * r);
  }
}

// y (B, out) = x (B, in) @ W.T (+ bias): the weight read that decoding is bound by. W is (out, in) as
// nn.Linear holds it; decode_layout stores it transposed for this step, (in, out) contiguous, and for a few
// rows this streams it from memory front to back, a few rows of W at a time, into each row's outputs held
// in L1/L2 (kChunk/B outputs per pass over W). Here MKL's sgemm reads SmolLM2's fp32 matrices at 19-29 GB/s
// for one row and 9-15 for 2-8 rows; this loop at 31-41 and 13-31 (per shape; bench_decode.py: the model).
constexpr int64_t kStreamRows = 8;  // at most this many rows stream; more rows are a GEMM for MKL
constexpr int64_t kChunk = 16384;   // floats of output (over all rows) accumulated per pass over W

// fp32: four rows of W per pass; the compiler vectorises the sum (bench: 33-41 GB/s here)
inline void stream_rows(const float* Wt, const float* x, float* y, int64_t B, int64_t in, int64_t out,
                        int64_t o0, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= in; i += 4) {
    const float *w0 = Wt + i * out + o0, *w1 = w0 + out, *w2 = w1 + out, *w3 = w2 + out;
    for (int64_t b = 0; b < B; ++b) {
      const float *xb = x + b * in + i, x0 = xb[0], x1 = xb[1], x2 = xb[2], x3 = xb[3];
      float* yb = y + b * out + o0;
#pragma omp simd
      for (int64_t o = 0; o < n; ++o) yb[o] += x0 * w0[o] + x1 * w1[o] + x2 * w2[o] + x3 * w3[o];
    }
  }
  for (; i < in; ++i) {
    const float* w = Wt + i * out + o0;
    for (int64_t b = 0; b < B; ++b) {
      const float xi = x[b * in + i];
      float* yb = y + b * out + o0;
#pragma omp simd
      for (int64_t o = 0; o < n; ++o) yb[o] += xi * w[o];
    }
  }
}

// bf16: eight rows of W per pass, widened 16 at a time in vector registers (GCC/Clang vector extensions),
// the next eight rows prefetched meanwhile. Left to the compiler and the hardware prefetcher, bf16 read at
// ~20 GB/s here, no faster in weights per second than fp32; this reads it at ~30.
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

inline f32x16 widen(const uint16_t* p) {
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<f32x16>(__builtin_convertvector(h, u32x16) << 16);
}

inline void stream_rows(const uint16_t* Wt, const float* x, float* y, int64_t B, int64_t in, int64_t out,
                        int64_t o0, int64_t n) {
  constexpr int64_t R = 8, line = 32;  // bf16 per cache line
  const int64_t n16 = n / 16 * 16;
  int64_t i = 0;
  for (; i + R <= in; i += R) {
    const uint16_t* w = Wt + i * out + o0;  // row i + k of this chunk: w + k * out
    const bool ahead = i + 2 * R <= in;
    for (int64_t b = 0; b < B; ++b) {
      const float* xb = x + b * in + i;
      float* yb = y + b * out + o0;
      for (int64_t o = 0; o < n16; o += 16) {
        if (ahead && b == 0 && o % line == 0)
          for (int64_t k = R; k < 2 * R; ++k) __builtin_prefetch(w + k * out + o);
        f32x16 acc;
        std::memcpy(&acc, yb + o, sizeof acc);
        acc += (xb[0] * widen(w + o) + xb[1] * widen(w + out + o)) +
               (xb[2] * widen(w + 2 * out + o) + xb[3] * widen(w + 3 * out + o)) +
               ((xb[4] * widen(w + 4 * out + o) + xb[5] * widen(w + 5 * out + o)) +
                (xb[6] * widen(w + 6 * out + o) + xb[7] * widen(w + 7 * out + o)));
        std::memcpy(yb + o, &acc, sizeof acc);
      }
      for (int64_t o = n16; o < n; ++o)
        for (int64_t k = 0; k < R; ++k) yb[o] += xb[k] * f32(w[k * out + o]);
    }
  }
  for (; i < in; ++i) {
    const uint16_t* w = Wt + i * out + o0;
    for (int64_t b = 0; b < B; ++b) {
      const float xi = x[b * in + i];
      float* yb = y + b * out + o0;
      for (int64_t o = 0; o < n; ++o) yb[o] += xi * f32(w[o]);
    }
  }
}

// x fp32 (B, in), W (out, in) of the weights' dtype, bias (out) or empty -> y fp32 (B, out)
at::Tensor product(const at::Tensor& x, const at::Tensor& W, const at::Tensor& bias) {
  const bool has_bias = bias.defined() && bias.numel() > 0;
  const int64_t B = x.size(0), out = W.size(0), in = W.size(1);
  if (B > kStreamRows || W.stride(0) != 1 || W.stride(1) != out || !x.is_contiguous()) {
    const at::Tensor xw = x.to(W.scalar_type());
    return (has_bias ? at::addmm(bias, xw, W.t()) : at::mm(xw, W.t())).to(at::kFloat);
  }
  at::Tensor y = has_bias ? bias.to(at::kFloat).expand({B, out}).contiguous()
                          : at::zeros({B, out}, x.options().dtype(at::kFloat));
  const int64_t chunk = kChunk / B;
  for (int64_t o0 = 0; o0 < out; o0 += chunk) {
    const int64_t n = std::min(chunk, out - o0);
    if (W.scalar_type() == at::kFloat)
      stream_rows(ptr<float>(W), x.data_ptr<float>(), y.data_ptr<float>(), B, in, out, o0, n);
    else
      stream_rows(ptr<uint16_t>(W), x.data_ptr<float>(), y.data_ptr<float>(), B, in, out, o0, n);
  }
  return y;
}

// x[i] = x[i] * cos[i] + rotate_half(x)[i] * sin[i] for one head of D
inline void rope(float* x, const float* cos, const float* sin, int64_t D) {
  const int64_t h = D / 2;
  float tmp[512];
  std::copy(x, x + D, tmp);
  for (int64_t i = 0; i < h; ++i) x[i] = tmp[i] * cos[i] - tmp[i + h] * sin[i];
  for (int64_t i = h; i < D; ++i) x[i] = tmp[i] * cos[i] + tmp[i - h] * sin[i];
}

struct Dims {
  int64_t B, H, heads, kv_heads, D, P, slot, window;
};

// Self-attention of each row's new token over its cache slots; writes k/v into slot `slot`. Each cached key
// and value is read once for all the query heads that share it (GQA), and the softmax's exp is ATen's
// vectorised kernel over every head's scores at once: what matters past a few hundred slots, where reading
// the cache and the exps cost as much as the weights.
template <typename W>
at::Tensor attention(const at::Tensor& xn, const at::Tensor* w, at::Tensor& kc, at::Tensor& vc,
                     const at::Tensor& valid, const at::Tensor& cos, const at::Tensor& sin, const Dims& d) {
  const int64_t Q = d.heads * d.D, K = d.kv_heads * d.D, S = kc.size(2), rep = d.heads / d.kv_heads;
  at::Tensor qkv = product(xn, w[1], w[2]).contiguous();  // (B, Q + 2K)
  at::Tensor y = at::zeros({d.B, Q}, xn.options());
  const float scale = 1.f / std::sqrt(static_cast<float>(d.D));
  const int64_t first = d.window > 0 ? std::max<int64_t>(0, d.slot - d.window + 1) : 0;
  const int64_t n = d.slot + 1 - first;  // slots attended to
  at::Tensor scores = at::empty({d.heads, n}, xn.options());  // one row's scores, head-major
  float* sc = scores.data_ptr<float>();
  std::vector<float> best(d.heads), total(d.heads);
  for (int64_t b = 0; b < d.B; ++b) {
    float* row = qkv.data_ptr<float>() + b * (Q + 2 * K);
    const float* c = cos.data_ptr<float>() + b * d.D;
    const float* s = sin.data_ptr<float>() + b * d.D;
    for (int64_t h = 0; h < d.heads + d.kv_heads; ++h) rope(row + h * d.D, c, s, d.D);  // queries and keys
    const bool* ok = valid.data_ptr<bool>() + b * valid.size(1) + first;
    std::fill(best.begin(), best.end(), -INFINITY);
    for (int64_t g = 0; g < d.kv_heads; ++g) {
      W* keys = mut<W>(kc) + (b * d.kv_heads + g) * S * d.D;
      W* vals = mut<W>(vc) + (b * d.kv_heads + g) * S * d.D;
      for (int64_t i = 0; i < d.D; ++i) {
        keys[d.slot * d.D + i] = stored<W>(row[Q + g * d.D + i]);
        vals[d.slot * d.D + i] = stored<W>(row[Q + K + g * d.D + i]);
      }
      for (int64_t t = 0; t < n; ++t) {
        const W* k = keys + (first + t) * d.D;
        for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
          const float v = ok[t] ? dot(row + h * d.D, k, d.D) * scale : -INFINITY;
          sc[h * n + t] = v;
          best[h] = std::max(best[h], v);
        }
      }
    }
    for (int64_t h = 0; h < d.heads; ++h) {  // the current slot is always valid: best is finite
      float* sh = sc + h * n;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) sh[t] -= best[h];
    }
    scores.exp_();
    for (int64_t h = 0; h < d.heads; ++h) {
      const float* sh = sc + h * n;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t t = 0; t < n; ++t) sum += sh[t];
      total[h] = sum;
    }
    for (int64_t g = 0; g < d.kv_heads; ++g) {
      const W* vals = mut<W>(vc) + (b * d.kv_heads + g) * S * d.D;
      float* out = y.data_ptr<float>() + b * Q + g * rep * d.D;  // this group's rep heads, contiguous
      for (int64_t t = 0; t < n; ++t) {
        if (!ok[t]) continue;
        const W* v = vals + (first + t) * d.D;
        for (int64_t j = 0; j < rep; ++j) {
          const float pt = sc[(g * rep + j) * n + t];
          float* oh = out + j * d.D;
#pragma omp simd
          for (int64_t i = 0; i < d.D; ++i) oh[i] += pt * f32(v[i]);
        }
      }
      for (int64_t j = 0; j < rep; ++j) {
        const float inv = 1.f / total[g * rep + j];
        float* oh = out + j * d.D;
#pragma omp simd
        for (int64_t i = 0; i < d.D; ++i) oh[i] *= inv;
      }
    }
  }
  return product(y, w[3], w[4]);
}

// Gate weights (B, P) from router logits, and each row's chosen pathway (-1 in soft mode)
template <typename W>
void gate(const at::Tensor& xn, const at::Tensor& router, const c10::optional<at::Tensor>& bias, int64_t mode,
          int64_t force, double temperature, const Dims& d, float* gates, std::vector<int64_t>& choice) {
  for (int64_t b = 0; b < d.B; ++b) {
    float* g = gates + b * d.P;
    for (int64_t p = 0; p < d.P; ++p) {
      g[p] = dot(xn.data_ptr<float>() + b * d.H, ptr<W>(router) + p * d.H, d.H);
      if (bias) g[p] += bias->data_ptr<float>()[b * d.P + p];
    }
    if (mode == kSoft) {
      const float best = *std::max_element(g, g + d.P);
      float total = 0.f;
      for (int64_t p = 0; p < d.P; ++p) total += (g[p] = std::exp((g[p] - best) / temperature));
      for (int64_t p = 0; p < d.P; ++p) g[p] /= total;
      choice[b] = -1;
    } else {
      choice[b] = mode == kForce ? force : std::max_element(g, g + d.P) - g;  // first maximum, as argmax
      std::fill(g, g + d.P, 0.f);
      g[choice[b]] = 1.f;
    }
  }
}

// Base FFN shared by all pathways plus each pathway's LoRA on gate, up and down, blended by the gates;
// one pathway at a time over the rows that use it. The rank-r products are short loops for a few rows and
// small GEMMs for more (kLoraGemmRows); SiLU is ATen's vectorised kernel.
constexpr int64_t kLoraGemmRows = 4;

template <typename W>
at::Tensor lora_ffn(const at::Tensor& xn, const at::Tensor* w, double scale, const float* gates,
                    const std::vector<int64_t>& choice, const Dims& d) {
  const at::Tensor &A_gu = w[9], &B_gu = w[10], &A_d = w[11], &B_d = w[12];
  const int64_t I = w[8].size(1), r = A_gu.size(2), B = d.B;
  const float s = static_cast<float>(scale);
  const bool gemm = B >= kLoraGemmRows;
  const at::Tensor gu = product(xn, w[7], {}).contiguous();  // (B, 2I), shared by every pathway
  at::Tensor mix = at::zeros({B, I}, xn.options());           // sum_p g_p h_p
  at::Tensor z = at::zeros({d.P, B, r}, xn.options());         // s g_p A_down_p h_p
  at::Tensor a = at::empty({B, 2 * r}, xn.options());
  for (int64_t p = 0; p < d.P; ++p) {
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b)
      if (choice[b] >= 0 ? choice[b] == p : gates[b * d.P + p] != 0.f) rows.push_back(b);
    if (rows.empty()) continue;
    a.zero_();
    const W* Ap = ptr<W>(A_gu) + p * 2 * r * d.H;
    for (int64_t b : rows)
      for (int64_t k = 0; k < 2 * r; ++k)
        a.data_ptr<float>()[b * 2 * r + k] = s * dot(xn.data_ptr<float>() + b * d.H, Ap + k * d.H, d.H);
    at::Tensor g = gu.clone();  // this pathway's gate and up: base + s B A x
    if (gemm) {
      g.narrow(1, 0, I).addmm_(a.narrow(1, 0, r), B_gu[p][0].t().to(at::kFloat));
      g.narrow(1, I, I).addmm_(a.narrow(1, r, r), B_gu[p][1].t().to(at::kFloat));
    } else {
      const W *Bg = ptr<W>(B_gu) + p * 2 * I * r, *Bu = Bg + I * r;
      for (int64_t b : rows) {
        float* gb = g.data_ptr<float>() + b * 2 * I;
        const float* ab = a.data_ptr<float>() + b * 2 * r;
        for (int64_t i = 0; i < I; ++i) {
          gb[i] += dot(ab, Bg + i * r, r);
          gb[I + i] += dot(ab + r, Bu + i * r, r);
        }
      }
    }
    at::Tensor h = g.narrow(1, 0, I);
    at::silu_(h).mul_(g.narrow(1, I, I));  // h_p = silu(gate) * up, in the gate half of g
    const W* Ad = ptr<W>(A_d) + p * r * I;
    for (int64_t b : rows) {
      const float gp = gates[b * d.P + p];
      const float* hb = g.data_ptr<float>() + b * 2 * I;
      float* mb = mix.data_ptr<float>() + b * I;
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) mb[i] += gp * hb[i];
      float* zb = z.data_ptr<float>() + (p * B + b) * r;
      for (int64_t k = 0; k < r; ++k) zb[k] = s * gp * dot(hb, Ad + k * I, I);
    }
  }
  at::Tensor y = product(mix, w[8], {}).contiguous();  // (B, H)
  for (int64_t p = 0; p < d.P; ++p) {
    if (gemm) {
      y.addmm_(z[p], B_d[p].t().to(at::kFloat));
      continue;
    }
    const W* Bd = ptr<W>(B_d) + p * d.H * r;
    for (int64_t b = 0; b < B; ++b) {
      const float* zp = z.data_ptr<float>() + (p * B + b) * r;
      if (std::all_of(zp, zp + r, [](float v) { return v == 0.f; })) continue;
      float* out = y.data_ptr<float>() + b * d.H;
      for (int64_t j = 0; j < d.H; ++j) out[j] += dot(zp, Bd + j * r, r);
    }
  }
  return y;
}

// Dense experts: soft blends every expert over all rows; top1/force runs each used expert on its rows.
at::Tensor expert_ffn(const at::Tensor& xn, const at::Tensor* w, const at::Tensor& gates_t,
                      const std::vector<int64_t>& choice, const Dims& d) {
  const int64_t I = w[8].size(2);
  const at::Tensor none;
  auto one = [&](const at::Tensor& x, int64_t p) {
    at::Tensor gu = product(x, w[7][p], none);
    return product((at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I)).contiguous(), w[8][p], none);
  };
  if (choice[0] < 0) {
    at::Tensor y = at::zeros({d.B, d.H}, xn.options());
    for (int64_t p = 0; p < d.P; ++p) y.add_(gates_t.narrow(1, p, 1) * one(xn, p));
    return y;
  }
  if (std::all_of(choice.begin(), choice.end(), [&](int64_t c) { return c == choice[0]; }))
    return one(xn, choice[0]);
  at::Tensor y = at::empty({d.B, d.H}, xn.options());
  for (int64_t p = 0; p < d.P; ++p) {
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < d.B; ++b)
      if (choice[b] == p) rows.push_back(b);
    if (rows.empty()) continue;
    at::Tensor idx = at::tensor(rows, at::kLong);
    y.index_copy_(0, idx, one(xn.index_select(0, idx), p));
  }
  return y;
}

template <typename W>
std::tuple<at::Tensor, at::Tensor> decode_step(
    at::TensorList weights, at::Tensor ids, at::Tensor cos, at::Tensor sin, at::Tensor k_cache,
    at::Tensor v_cache, at::Tensor valid, int64_t slot, c10::optional<at::Tensor> gear_bias, int64_t mode,
    int64_t force, double temperature, double scale, double eps, int64_t heads, int64_t kv_heads,
    int64_t window, bool experts) {
  const int64_t L = (static_cast<int64_t>(weights.size()) - 3) / kPerLayer;
  TORCH_CHECK(L > 0 && static_cast<int64_t>(weights.size()) == L * kPerLayer + 3, "weights: 13 a layer + 3");
  const at::Tensor &embed = weights[L * kPerLayer], &final_norm = weights[L * kPerLayer + 1],
                   &lm_head = weights[L * kPerLayer + 2];
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && valid.is_contiguous() &&
                  cos.is_contiguous() && sin.is_contiguous(),
              "the KV cache and rotary tables must be contiguous");
  TORCH_CHECK(mode != kForce || (force >= 0 && force < weights[6].size(0)), "force: no pathway ", force);
  TORCH_CHECK(slot < k_cache.size(3), "no free cache slot: reserve() before the step");
  const int64_t H = embed.size(1), D = k_cache.size(4), P = weights[6].size(0);
  const Dims d{ids.size(0), H, heads, kv_heads, D, P, slot, window};
  TORCH_CHECK(D <= 512 && D % 2 == 0 && kv_heads > 0 && heads % kv_heads == 0, "unsupported attention shape");
  TORCH_CHECK(k_cache.size(0) == L && k_cache.size(1) == d.B && k_cache.size(2) == kv_heads &&
                  v_cache.sizes() == k_cache.sizes() && valid.size(0) == d.B &&
                  valid.size(1) == k_cache.size(3),
              "the KV cache does not match the batch or the model");
  TORCH_CHECK(cos.size(0) == d.B && cos.size(1) == D && sin.sizes() == cos.sizes(), "rotary tables: (B, D)");
  TORCH_CHECK(!gear_bias || (gear_bias->size(0) == d.B && gear_bias->size(1) == P &&
                              gear_bias->scalar_type() == at::kFloat && gear_bias->is_contiguous()),
              "gear bias: (B, P) fp32");
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == at::kLong, "ids: (B,) int64");
  TORCH_CHECK(weights[1].size(0) == (heads + 2 * kv_heads) * D && weights[1].size(1) == H, "qkv: (Q+2K, H)");
  at::Tensor x = embed.index_select(0, ids).to(at::kFloat).contiguous();  // (B, H), the residual stream
  at::Tensor xn = at::empty_like(x);
  at::Tensor trace = at::empty({d.B, L, P}, x.options());
  at::Tensor gates_t = at::empty({d.B, P}, x.options());
  std::vector<int64_t> choice(d.B);
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* w = weights.data() + l * kPerLayer;
    at::Tensor kc = k_cache[l], vc = v_cache[l];
    rms_norm<W>(x, w[0], eps, xn);
    x.add_(attention<W>(xn, w, kc, vc, valid, cos, sin, d));
    rms_norm<W>(x, w[5], eps, xn);
    float* g = gates_t.data_ptr<float>();
    gate<W>(xn, w[6], gear_bias, mode, force, temperature, d, g, choice);
    for (int64_t b = 0; b < d.B; ++b)
      std::copy(g + b * P, g + (b + 1) * P, trace.data_ptr<float>() + (b * L + l) * P);
    x.add_(experts ? expert_ffn(xn, w, gates_t, choice, d) : lora_ffn<W>(xn, w, scale, g, choice, d));
  }
  rms_norm<W>(x, final_norm, eps, xn);
  return {product(xn, lm_head, {}), trace};
}

std::tuple<at::Tensor, at::Tensor> decode_step_any(
    at::TensorList weights, at::Tensor ids, at::Tensor cos, at::Tensor sin, at::Tensor k_cache,
    at::Tensor v_cache, at::Tensor valid, int64_t slot, c10::optional<at::Tensor> gear_bias, int64_t mode,
    int64_t force, double temperature, double scale, double eps, int64_t heads, int64_t kv_heads,
    int64_t window, bool experts) {
  const auto dtype = weights[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "the native decode step is for fp32 or bf16");
  TORCH_CHECK(k_cache.scalar_type() == dtype && cos.scalar_type() == at::kFloat,
              "the KV cache has the weights' dtype; rotary tables are fp32");
  for (const at::Tensor& t : weights)
    TORCH_CHECK(t.numel() == 0 || t.scalar_type() == dtype, "every weight has the same dtype");
  auto step = dtype == at::kFloat ? &decode_step<float> : &decode_step<uint16_t>;
  return step(weights, ids, cos, sin, k_cache, v_cache, valid, slot, gear_bias, mode, force, temperature,
              scale, eps, heads, kv_heads, window, experts);
}

}  // namespace

TORCH_LIBRARY(qwythos, m) {
  m.def(
      "decode_step(Tensor[] weights, Tensor ids, Tensor cos, Tensor sin, Tensor k_cache, Tensor v_cache, "
      "Tensor valid, int slot, Tensor? gear_bias, int mode, int force, float temperature, float scale, "
      "float eps, int heads, int kv_heads, int window, bool experts) -> (Tensor, Tensor)");
  m.def("stream_product(Tensor x, Tensor W) -> Tensor");  // x @ W.T, as the step reads weights
}

TORCH_LIBRARY_IMPL(qwythos, CPU, m) {
  m.impl("decode_step", &decode_step_any);
  m.impl("stream_product", [](const at::Tensor& x, const at::Tensor& W) { return product(x, W, {}); });
}
