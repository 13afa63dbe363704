#include "testing/tolerance.h"

#include <cmath>
#include <algorithm>
#include <cstdio>

namespace attnkit::testing {

double unit_roundoff(DType t) {
  switch (t) {
    case DType::kF32: return std::ldexp(1.0, -24);
    case DType::kF16: return std::ldexp(1.0, -11);
    case DType::kBF16: return std::ldexp(1.0, -8);
    case DType::kI8: return 0.0;  // a K/V storage type, never an output; see int8_kv_out_bound
  }
  return 0.0;
}

void round_to_dtype(std::vector<float>* values, DType t) {
  if (t == DType::kF32) return;
  for (float& x : *values) {
    uint16_t h = t == DType::kF16 ? f32_to_f16(x) : f32_to_bf16(x);
    x = t == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

ErrorStats error_stats(const std::vector<double>& ref, const std::vector<float>& x) {
  ErrorStats s;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], v = x[i];
    bool agree;
    if (std::isnan(r)) {
      agree = std::isnan(v);
    } else if (std::isinf(r)) {
      agree = v == r;
    } else {
      agree = std::isfinite(v);
      if (agree) {
        const double e = std::fabs(v - r);
        if (e > s.max_abs || s.worst < 0) {
          s.max_abs = e;
          s.worst = static_cast<int64_t>(i);
        }
        num += e * e;
        den += r * r;
      }
    }
    if (!agree) {
      if (s.bad_nonfinite++ == 0) s.first_nonfinite = static_cast<int64_t>(i);
    }
  }
  s.nmse = den > 0.0 ? num / den : num;
  return s;
}

CheckResult check_close(const std::vector<double>& ref, const std::vector<float>& got,
                        const std::vector<float>& baseline, DType out_dtype, const std::string& what,
                        const Tolerance& tol, std::string (*index_name)(int64_t, const void*),
                        const void* index_ctx) {
  CheckResult c;
  char buf[512];
  if (got.size() != ref.size() || baseline.size() != ref.size()) {
    c.ok = false;
    std::snprintf(buf, sizeof(buf), "%s: size mismatch ref %zu got %zu baseline %zu", what.c_str(), ref.size(),
                  got.size(), baseline.size());
    c.message = buf;
    return c;
  }
  c.got = error_stats(ref, got);
  c.baseline = error_stats(ref, baseline);
  double ref_mag = 0.0, ref_sq = 0.0;
  int64_t n_finite = 0;
  for (double r : ref) {
    if (!std::isfinite(r)) continue;
    ref_mag = std::max(ref_mag, std::fabs(r));
    ref_sq += r * r;
    ++n_finite;
  }
  // Floors: a few roundings of the output dtype at the reference's magnitude (at least 1, since
  // attention outputs are convex combinations of values of order 1 and LSEs are O(log n)).
  const double u = unit_roundoff(out_dtype);
  const double abs_floor = tol.abs_floor > 0.0 ? tol.abs_floor : 16.0 * u * std::max(1.0, ref_mag);
  const double nmse_floor = tol.nmse_floor > 0.0 ? tol.nmse_floor : 16.0 * u * u;
  c.abs_bound = tol.factor * c.baseline.max_abs + abs_floor;
  c.nmse_bound = tol.factor * tol.factor * c.baseline.nmse + nmse_floor;
  if (tol.extra_abs > 0.0) {
    c.abs_bound += tol.extra_abs;
    // NMSE = sum e^2 / sum ref^2 <= n extra^2 / sum ref^2 for the error that extra_abs bounds.
    if (ref_sq > 0.0) c.nmse_bound += tol.extra_abs * tol.extra_abs * static_cast<double>(n_finite) / ref_sq;
  }

  const auto where = [&](int64_t i) -> std::string {
    if (i < 0) return "-";
    return index_name ? index_name(i, index_ctx) : "[" + std::to_string(i) + "]";
  };
  std::string problems;
  if (c.got.bad_nonfinite > 0) {
    const int64_t i = c.got.first_nonfinite;
    std::snprintf(buf, sizeof(buf), "%lld non-finite mismatches, first at %s (got %g, ref %g); ",
                  static_cast<long long>(c.got.bad_nonfinite), where(i).c_str(), static_cast<double>(got[i]), ref[i]);
    problems += buf;
  }
  if (c.got.max_abs > c.abs_bound) problems += "max abs err above bound; ";
  if (c.got.nmse > c.nmse_bound) problems += "NMSE above bound; ";
  c.ok = problems.empty();
  const int64_t w = c.got.worst;
  std::snprintf(buf, sizeof(buf),
                "%s: max_abs_err %.3g at %s (got %.9g, ref %.9g) bound %.3g; NMSE %.3g bound %.3g; "
                "f32 baseline max_abs_err %.3g NMSE %.3g",
                what.c_str(), c.got.max_abs, where(w).c_str(), w >= 0 ? static_cast<double>(got[w]) : 0.0,
                w >= 0 ? ref[w] : 0.0, c.abs_bound, c.got.nmse, c.nmse_bound, c.baseline.max_abs, c.baseline.nmse);
  c.message = (c.ok ? std::string() : "FAILED (" + problems + ") ") + buf;
  return c;
}

double int8_kv_logit_bound(double mul, double q_l1, double k_scale_max) { return std::fabs(mul) * q_l1 * k_scale_max / 2.0; }

double int8_kv_out_bound(double logit_bound, double v_abs_max, double v_scale_max) {
  return std::expm1(2.0 * logit_bound) * v_abs_max + v_scale_max / 2.0;
}

double int16_query_logit_bound(double mul, double q_abs_max, double k_l1_max) {
  return std::fabs(mul) * q_abs_max * 0.51 / 32767.0 * k_l1_max;
}

double int16_weight_out_bound(int64_t tile_keys, double v_scale_max) {
  return static_cast<double>(tile_keys) * 0.51 / 32767.0 * 128.0 * v_scale_max;
}

CheckResult check_within(const std::vector<double>& ref, const std::vector<float>& got, const std::vector<double>& bound,
                         const std::string& what) {
  CheckResult r;
  r.got = error_stats(ref, got);
  double worst_ratio = 0.0;
  int64_t worst = -1;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(ref[i]) || !std::isfinite(got[i])) continue;
    const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double ratio = bound[i] > 0 ? e / bound[i] : (e > 0 ? INFINITY : 0.0);
    if (ratio > worst_ratio || worst < 0) {
      worst_ratio = ratio;
      worst = static_cast<int64_t>(i);
    }
  }
  r.ok = r.got.bad_nonfinite == 0 && worst_ratio <= 1.0;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s: worst error / bound %.3g at %lld (error %.3g, bound %.3g), %lld non-finite mismatches",
                what.c_str(), worst_ratio, static_cast<long long>(worst),
                worst >= 0 ? std::fabs(static_cast<double>(got[static_cast<size_t>(worst)]) - ref[static_cast<size_t>(worst)]) : 0.0,
                worst >= 0 ? bound[static_cast<size_t>(worst)] : 0.0, static_cast<long long>(r.got.bad_nonfinite));
  r.message = buf;
  return r;
}

}  // namespace attnkit::testing
