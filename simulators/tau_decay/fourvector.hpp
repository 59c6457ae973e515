// A small Lorentz four-vector (E, px, py, pz) in GeV, metric (+, -, -, -). Header-only.
#pragma once

#include <algorithm>
#include <cmath>

namespace probexec::tau {

struct ThreeVector {
  double x = 0, y = 0, z = 0;

  ThreeVector() = default;
  ThreeVector(double x_, double y_, double z_) : x(x_), y(y_), z(z_) {}

  double dot(const ThreeVector& o) const { return x * o.x + y * o.y + z * o.z; }
  double mag2() const { return dot(*this); }
  double mag() const { return std::sqrt(mag2()); }
  ThreeVector operator+(const ThreeVector& o) const { return {x + o.x, y + o.y, z + o.z}; }
  ThreeVector operator-(const ThreeVector& o) const { return {x - o.x, y - o.y, z - o.z}; }
  ThreeVector operator*(double s) const { return {x * s, y * s, z * s}; }
  ThreeVector operator-() const { return {-x, -y, -z}; }

  // Unit vector from polar angle cosine and azimuth.
  static ThreeVector from_angles(double cos_theta, double phi) {
    cos_theta = std::clamp(cos_theta, -1.0, 1.0);
    double sin_theta = std::sqrt((1.0 - cos_theta) * (1.0 + cos_theta));
    return {sin_theta * std::cos(phi), sin_theta * std::sin(phi), cos_theta};
  }
};

// Rotates `v` by the rotation that takes the +z axis onto the unit vector `axis` (the identity for
// axis = +z, a half-turn about x for axis = -z). Use it to express a vector given relative to a
// direction (e.g. an angle measured from a particle's flight direction) in the frame of that axis.
inline ThreeVector rotate_z_to(const ThreeVector& v, const ThreeVector& axis) {
  double a = axis.mag();
  if (a <= 0) return v;
  double ux = axis.x / a, uy = axis.y / a, uz = axis.z / a;
  double s = std::sqrt(ux * ux + uy * uy);  // sin of the polar angle of the axis
  if (s < 1e-300) return uz >= 0 ? v : ThreeVector{v.x, -v.y, -v.z};
  // R = Rz(phi) * Ry(theta): columns are e_theta, e_phi, axis.
  double cth = uz, cph = ux / s, sph = uy / s;
  return {cth * cph * v.x - sph * v.y + ux * v.z,  //
          cth * sph * v.x + cph * v.y + uy * v.z,  //
          -s * v.x + uz * v.z};
}

struct FourVector {
  double e = 0, px = 0, py = 0, pz = 0;

  FourVector() = default;
  FourVector(double e_, double px_, double py_, double pz_) : e(e_), px(px_), py(py_), pz(pz_) {}

  // The on-shell four-vector of mass `m` and momentum `p`.
  static FourVector from_mass(double m, const ThreeVector& p) { return {std::sqrt(m * m + p.mag2()), p.x, p.y, p.z}; }

  ThreeVector p3() const { return {px, py, pz}; }
  double p() const { return p3().mag(); }
  double pt() const { return std::hypot(px, py); }
  double m2() const { return e * e - p3().mag2(); }
  // Invariant mass; a slightly negative m^2 from rounding gives -sqrt(-m^2) so it stays visible.
  double mass() const {
    double q = m2();
    return q >= 0 ? std::sqrt(q) : -std::sqrt(-q);
  }
  // Velocity of the frame in which this four-vector is at rest.
  ThreeVector beta() const { return p3() * (1.0 / e); }

  FourVector operator+(const FourVector& o) const { return {e + o.e, px + o.px, py + o.py, pz + o.pz}; }
  FourVector operator-(const FourVector& o) const { return {e - o.e, px - o.px, py - o.py, pz - o.pz}; }
  FourVector& operator+=(const FourVector& o) { return *this = *this + o; }
  FourVector& operator-=(const FourVector& o) { return *this = *this - o; }

  // Boost by velocity `b` (|b| < 1): the four-vector seen from a frame moving with -b, i.e. a
  // particle at rest acquires velocity b.
  FourVector boosted(const ThreeVector& b) const {
    double b2 = b.mag2();
    if (b2 <= 0) return *this;
    double gamma = 1.0 / std::sqrt(1.0 - b2);
    double bp = b.dot(p3());
    double k = (gamma - 1.0) * bp / b2 + gamma * e;
    return {gamma * (e + bp), px + k * b.x, py + k * b.y, pz + k * b.z};
  }

  // This four-vector, given in the rest frame of `parent`, expressed in the frame where `parent`
  // has four-momentum `parent`: written with E/M and p/M directly rather than through beta, so
  // large boosts keep full precision. Pass the parent's mass when it is known exactly (it is then
  // not recomputed from E^2 - p^2, which loses digits for fast parents).
  FourVector boosted_to_frame_of(const FourVector& parent, double parent_mass = -1) const {
    double m = parent_mass > 0 ? parent_mass : parent.mass();
    if (!(m > 0)) return boosted(parent.beta());
    ThreeVector pp = parent.p3();
    double pdot = pp.dot(p3());
    double e_lab = (parent.e * e + pdot) / m;
    double k = (pdot / (parent.e + m) + e) / m;
    return {e_lab, px + k * pp.x, py + k * pp.y, pz + k * pp.z};
  }

  // The inverse: this four-vector seen from the rest frame of `parent`.
  FourVector in_rest_frame_of(const FourVector& parent) const {
    FourVector reversed{parent.e, -parent.px, -parent.py, -parent.pz};
    return boosted_to_frame_of(reversed);
  }

  FourVector rotated_z_to(const ThreeVector& axis) const {
    ThreeVector r = rotate_z_to(p3(), axis);
    return {e, r.x, r.y, r.z};
  }
};

// Momentum of either daughter in the two-body decay M -> m1 m2 (0 when closed).
inline double two_body_momentum(double M, double m1, double m2) {
  double s = (M - m1 - m2) * (M + m1 + m2) * (M - m1 + m2) * (M + m1 - m2);
  return s > 0 ? std::sqrt(s) / (2.0 * M) : 0.0;
}

}  // namespace probexec::tau
