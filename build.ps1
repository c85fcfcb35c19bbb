#!/usr/bin/env pwsh
# The same steps as the README, for PowerShell users: kernels (when nvcc is on PATH), build, tests.
param(
    [string]$Configuration = "Release",
    [switch]$SkipTests
)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot

if (Get-Command nvcc -ErrorAction SilentlyContinue) {
    cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release
    if ($LASTEXITCODE -ne 0) { throw "cmake configure failed" }
    cmake --build build/native
    if ($LASTEXITCODE -ne 0) { throw "kernel build failed" }
} else {
    Write-Host "nvcc not found on PATH: skipping the CUDA kernels (the CPU backend needs none)."
}

dotnet build NativeContrast.sln -c $Configuration
if ($LASTEXITCODE -ne 0) { throw "dotnet build failed" }

if (-not $SkipTests) {
    dotnet test -c $Configuration
    if ($LASTEXITCODE -ne 0) { throw "tests failed" }
}
