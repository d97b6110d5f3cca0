{
  "targets": [
    {
      "target_name": "arrowquant_native",
      "sources": ["src/addon.cc", "src/dispatch.cc", "src/scalar.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2", "-O0", "-ffast-math"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O0", "-ffast-math"],
      "cflags": ["-O3", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Wno-unused-function"],
      "cflags_cc": ["-fexceptions"],
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["src/arch/x86/avx2.cc", "src/arch/x86/avx512.cc"]
        }],
        ["target_arch=='arm64'", {
          "sources": ["src/arch/arm/neon.cc"]
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "OTHER_CFLAGS": ["-O3", "-ffp-contract=off", "-fno-fast-math"],
            "OTHER_CPLUSPLUSFLAGS": ["-O3", "-ffp-contract=off", "-fno-fast-math"]
          }
        }],
        ["OS=='win'", {
          "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/fp:strict"] } }
        }]
      ]
    }
  ]
}
