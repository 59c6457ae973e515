// Every physics constant of the simulators, in one place, with its source (shared/physics.md
// quotes them from the PDG and the GFlash paper). Values marked "convention" are published choices,
// not laws: they are defaults of the configuration structs that use them, so a study can change
// them without touching code.
#pragma once

#include <array>

namespace probexec::physics {

// --- particle masses (GeV), PDG --------------------------------------------------------------------
inline constexpr double kTauMass = 1.77693;
inline constexpr double kTauLifetime = 2.903e-13;  // s (c tau ~ 87 um)
inline constexpr double kElectronMass = 0.000511;
inline constexpr double kMuonMass = 0.10566;
inline constexpr double kChargedPionMass = 0.13957;
inline constexpr double kNeutralPionMass = 0.13498;
inline constexpr double kChargedKaonMass = 0.49368;
inline constexpr double kNeutralKaonMass = 0.49761;

// --- resonances (mass, width) in GeV, PDG -------------------------------------------------------------
inline constexpr double kRhoMass = 0.7753, kRhoWidth = 0.1491;
inline constexpr double kA1Mass = 1.230, kA1Width = 0.42;  // width ~0.25-0.6 in the PDG: convention
inline constexpr double kKStarMass = 0.8917, kKStarWidth = 0.0514;

// --- particle codes (PDG Monte Carlo numbering) --------------------------------------------------------
enum ParticleId : int {
  kElectron = 11,
  kElectronNeutrino = 12,
  kMuon = 13,
  kMuonNeutrino = 14,
  kTauNeutrino = 16,
  kPhoton = 22,
  kPiZero = 111,
  kPiPlus = 211,
  kKZeroLong = 130,  // the K0bar of tau -> pi K0bar nu, treated as a long-lived neutral hadron
  kKPlus = 321,
};

// --- tau decay channels, PDG branching fractions (renormalised to 1 over those implemented) ----------
enum class TauChannel : int {
  ElectronNu = 0,     // e- nu_e~ nu_tau          17.82 %
  MuonNu = 1,         // mu- nu_mu~ nu_tau        17.39 %
  Pion = 2,           // pi- nu_tau               10.82 %
  PionPiZero = 3,     // pi- pi0 nu (rho)         25.49 %
  PionTwoPiZero = 4,  // pi- 2pi0 nu (a1)          9.2 %
  ThreePion = 5,      // pi- pi- pi+ nu (a1)       9.3 %
  ThreePionPiZero = 6,  // pi- pi- pi+ pi0 nu    4.5 %
  Kaon = 7,           // K- nu_tau                 0.696 %
  KaonPiZero = 8,     // K- pi0 nu (K*)            0.433 %
  PionKZero = 9,      // pi- K0bar nu (K*)         0.840 %
};
inline constexpr int kNumTauChannels = 10;
inline constexpr std::array<double, kNumTauChannels> kTauBranchingFractions = {
    0.1782, 0.1739, 0.1082, 0.2549, 0.092, 0.093, 0.045, 0.00696, 0.00433, 0.0084};
inline constexpr std::array<const char*, kNumTauChannels> kTauChannelNames = {
    "e nu nu", "mu nu nu", "pi nu", "pi pi0 nu", "pi 2pi0 nu", "3pi nu", "3pi pi0 nu", "K nu", "K pi0 nu", "pi K0 nu"};

// --- tau momentum prior of the earlier tau studies (GeV), convention -----------------------------------
inline constexpr double kTauPxMin = -2.0, kTauPxMax = 2.0;
inline constexpr double kTauPyMin = -2.0, kTauPyMax = 2.0;
inline constexpr double kTauPzMin = 40.0, kTauPzMax = 50.0;

// --- calorimeter geometry of the earlier tau studies (arbitrary length units), convention -------------
inline constexpr int kCaloNx = 35, kCaloNy = 35, kCaloNz = 20;
inline constexpr double kCaloXMin = -3.0, kCaloXMax = 3.0;
inline constexpr double kCaloYMin = -3.0, kCaloYMax = 3.0;
inline constexpr double kCaloZMin = 4.0, kCaloZMax = 15.0;

// --- sampling calorimeter response, convention ---------------------------------------------------------
inline constexpr double kSpotEnergy = 0.005;               // GeV per spot
inline constexpr double kSamplingFractionEM = 0.5;         // e, gamma
inline constexpr double kSamplingFractionHadron = 0.25;    // pi, K
inline constexpr double kSpotRelativeResolution = 0.11;    // Gamma-distributed spot energies

// --- GFlash (Grindhammer-Peters) homogeneous-medium parametrisation ------------------------------------
// <ln T> = ln(ln y - 0.812), <ln alpha> = ln(0.81 + (0.458 + 2.26/Z) ln y), y = E / Ec
// sigma(ln T) = 1/(-1.4 + 1.26 ln y), sigma(ln alpha) = 1/(-0.58 + 0.86 ln y),
// rho(ln T, ln alpha) = 0.705 - 0.023 ln y
inline constexpr double kGFlashLnTOffset = 0.812;
inline constexpr double kGFlashAlphaA = 0.81, kGFlashAlphaB = 0.458, kGFlashAlphaZ = 2.26;
inline constexpr double kGFlashSigmaTA = -1.4, kGFlashSigmaTB = 1.26;
inline constexpr double kGFlashSigmaAlphaA = -0.58, kGFlashSigmaAlphaB = 0.86;
inline constexpr double kGFlashRhoA = 0.705, kGFlashRhoB = -0.023;
// Radial profile (Moliere radii): Rc = a + b ln E + (c + d Z) tau; Rt = k1 (e^{k3 (tau - k2)} + e^{k4 (tau - k2)}),
// k1 = 0.659 - 0.00309 Z, k2 = 0.645, k3 = -2.59, k4 = 0.3585 + 0.0412 ln E;
// p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)), p1 = 2.632 - 0.00094 Z, p2 = 0.401 + 0.00187 Z, p3 = 1.313 - 0.0686 ln E
inline constexpr double kRcA = 0.0251, kRcB = 0.00319, kRcC = 0.1162, kRcD = -0.000381;
inline constexpr double kK1A = 0.659, kK1Z = -0.00309, kK2 = 0.645, kK3 = -2.59, kK4A = 0.3585, kK4B = 0.0412;
inline constexpr double kP1A = 2.632, kP1Z = -0.00094, kP2A = 0.401, kP2Z = 0.00187, kP3A = 1.313, kP3B = -0.0686;
// Spot count in a homogeneous medium: N ~ 93 ln(Z) E^0.876 (E in GeV)
inline constexpr double kSpotCountA = 93.0, kSpotCountExp = 0.876;

// --- the toy medium, convention (a lead-like absorber) ----------------------------------------------------
inline constexpr double kMediumZ = 82.0;                     // atomic number
inline constexpr double kCriticalEnergy = 0.00743;           // GeV (lead)
inline constexpr double kRadiationLength = 0.5;              // calorimeter length units per X0
inline constexpr double kMoliereRadius = 0.4;                // calorimeter length units
inline constexpr double kHadronicLengthScale = 3.0;          // toy hadron showers: longer (x X0) ...
inline constexpr double kHadronicWidthScale = 2.0;           // ... and wider (x R_M): documented toy choice

// --- tau decay simulator (simulators/tau_decay), convention --------------------------------------------
// Noise floor of the calorimeter likelihood in the tau simulator: every voxel ~ Normal(image,
// variance = image + floor^2). 0.005 GeV = one spot's energy (kSpotEnergy), so an empty voxel
// tolerates about one stray spot. Override per run with `probexec-sim-tau_decay --noise-floor X`.
inline constexpr double kTauCaloNoiseFloor = 0.005;  // GeV
inline constexpr int kTauMinus = 15;                 // PDG code of the tau- (we decay tau-)

// --- shower-model guards and the particle gun (calorimeter simulator), convention ----------------------
// The GFlash fits were made for showers of ~1 GeV and up; at small y = E/Ec the formulas diverge
// (sigma(ln T) has a pole at ln y = 1.11, <ln T> at ln y = 0.812). Below kGFlashMinLnY they are
// evaluated at ln y = kGFlashMinLnY (E ~ 150 MeV in lead), a documented extrapolation.
inline constexpr double kGFlashMinLnY = 3.0;
// Floor on the shape alpha so that beta = (alpha - 1)/T stays positive (a profile with a maximum).
inline constexpr double kGFlashMinAlpha = 1.1;
// Floor on the core radius Rc (Moliere radii); the fit goes negative only for E below ~0.4 MeV.
inline constexpr double kGFlashMinCoreRadius = 1e-3;
// Bound on |rho(ln T, ln alpha)| so the 2D normal stays proper at extreme y.
inline constexpr double kGFlashMaxAbsRho = 0.99;
// Noise floor of the voxel likelihood: variance = deposited energy (GeV) + floor^2.
inline constexpr double kCaloNoiseFloor = 0.01;  // GeV
// Particle-gun priors: energy ~ Uniform(min, max) GeV, entry x, y ~ Uniform(min, max) on the front
// face, polar angle ~ Uniform(0, max) rad, azimuth ~ Uniform(0, 2 pi).
inline constexpr double kGunEnergyMin = 1.0, kGunEnergyMax = 20.0;
inline constexpr double kGunEntryMin = -1.0, kGunEntryMax = 1.0;
inline constexpr double kGunThetaMax = 0.2;

}  // namespace probexec::physics
