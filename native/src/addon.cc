// The Node-API boundary. kernels.ts validates every argument; this file only unwraps them into
// the plain job structs (common.h) and runs the chosen variant, synchronously or on the libuv
// thread pool (AsyncWorker: the job is copied in, Execute() makes no N-API call, OnOK resolves).
//
// quantize / quantizeSync (variantId, src, dtype, rows, cols, bits, groupSize, refine,
//                          colScale | null, packed, scales, zeroPoints, rowStats) → number
// dequantize (variantId, packed, scales, zeroPoints, rows, cols, bits, groupSize, colScale | null, out)
// quantizeV2 / quantizeV2Sync (variantId, src, dtype, rows, cols, bits, groupSize, colScale | null,
//                              packed, groupParams, superScales, superOffsets, rowStats) → number
// dequantizeV2 (variantId, packed, groupParams, superScales, superOffsets, firstGroup, rows, cols,
//               bits, groupSize, colScale | null, out)
// columnAbsMax (variantId, src, dtype, rows, cols, out)
// memcpy (dst, src)          copies src.byteLength bytes: the benchmark's physical baseline
// variants: [{ name, supported }]  (kernels.ts picks the variant: ARROW_QUANT_KERNEL)
#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

#include "variants.h"

namespace {

using namespace aq;

/** First element of a typed array (any byteOffset; ArrayBuffer or SharedArrayBuffer backed). */
uint8_t* data_of(const Napi::Env& env, const Napi::Value& v, size_t* byteLength = nullptr) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  const napi_status st = napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset);
  if (st != napi_ok) throw Napi::TypeError::New(env, "arrowquant native: expected a typed array");
  if (byteLength) {
    size_t es = 1;
    switch (type) {
      case napi_int16_array:
      case napi_uint16_array:
        es = 2;
        break;
      case napi_int32_array:
      case napi_uint32_array:
      case napi_float32_array:
        es = 4;
        break;
      case napi_float64_array:
      case napi_bigint64_array:
      case napi_biguint64_array:
        es = 8;
        break;
      default:
        es = 1;
    }
    *byteLength = length * es;
  }
  return static_cast<uint8_t*>(data);
}

const KernelFns* kernel_of(const Napi::Env& env, const Napi::Value& v) {
  const int id = v.As<Napi::Number>().Int32Value();
  if (id < 0 || id >= variant_count()) throw Napi::RangeError::New(env, "arrowquant native: unknown kernel variant id");
  const VariantInfo& info = variant_at(id);
  if (!info.supported)
    throw Napi::Error::New(env, std::string("arrowquant native: the ") + info.fns->name + " kernels cannot run on this CPU");
  return info.fns;
}

int64_t int_of(const Napi::Value& v) { return (int64_t)v.As<Napi::Number>().DoubleValue(); }

QuantJob quant_job(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 13) throw Napi::TypeError::New(env, "arrowquant native: quantize takes 13 arguments");
  QuantJob j;
  j.src = data_of(env, info[1]);
  j.dtype = (int)int_of(info[2]);
  j.rows = int_of(info[3]);
  j.cols = int_of(info[4]);
  j.bits = (int)int_of(info[5]);
  j.groupSize = (int)int_of(info[6]);
  j.refine = info[7].ToBoolean().Value();
  j.colScale = info[8].IsNull() || info[8].IsUndefined() ? nullptr : reinterpret_cast<const float*>(data_of(env, info[8]));
  j.packed = data_of(env, info[9]);
  j.scales = reinterpret_cast<uint16_t*>(data_of(env, info[10]));
  j.zeroPoints = reinterpret_cast<uint16_t*>(data_of(env, info[11]));
  j.rowStats = reinterpret_cast<double*>(data_of(env, info[12]));
  return j;
}

QuantV2Job quant_v2_job(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 13) throw Napi::TypeError::New(env, "arrowquant native: quantizeV2 takes 13 arguments");
  QuantV2Job j;
  j.src = data_of(env, info[1]);
  j.dtype = (int)int_of(info[2]);
  j.rows = int_of(info[3]);
  j.cols = int_of(info[4]);
  j.bits = (int)int_of(info[5]);
  j.groupSize = (int)int_of(info[6]);
  j.colScale = info[7].IsNull() || info[7].IsUndefined() ? nullptr : reinterpret_cast<const float*>(data_of(env, info[7]));
  j.packed = data_of(env, info[8]);
  j.groupParams = data_of(env, info[9]);
  j.superScales = reinterpret_cast<uint16_t*>(data_of(env, info[10]));
  j.superOffsets = reinterpret_cast<uint16_t*>(data_of(env, info[11]));
  j.rowStats = reinterpret_cast<double*>(data_of(env, info[12]));
  return j;
}

int64_t run_job(const KernelFns* k, const QuantJob& j) { return k->quantize(j); }
int64_t run_job(const KernelFns* k, const QuantV2Job& j) { return k->quantizeV2(j); }

Napi::Value QuantizeSync(const Napi::CallbackInfo& info) {
  const KernelFns* k = kernel_of(info.Env(), info[0]);
  const QuantJob j = quant_job(info);
  return Napi::Number::New(info.Env(), (double)run_job(k, j));
}

Napi::Value QuantizeV2Sync(const Napi::CallbackInfo& info) {
  const KernelFns* k = kernel_of(info.Env(), info[0]);
  const QuantV2Job j = quant_v2_job(info);
  return Napi::Number::New(info.Env(), (double)run_job(k, j));
}

/** A quantize job (v1 QuantJob or v2 QuantV2Job) on the libuv pool. */
template <class Job>
class QuantizeWorker : public Napi::AsyncWorker {
 public:
  QuantizeWorker(Napi::Env env, const KernelFns* k, const Job& job, const Napi::CallbackInfo& info)
      : Napi::AsyncWorker(env, "arrowquant:quantize"), deferred_(Napi::Promise::Deferred::New(env)), k_(k), job_(job) {
    // Keep every buffer alive until the work is done.
    for (size_t i = 1; i < info.Length(); i++)
      if (info[i].IsObject()) refs_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { result_ = run_job(k_, job_); }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), (double)result_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  const KernelFns* k_;
  Job job_;
  int64_t result_ = -1;
  std::vector<Napi::ObjectReference> refs_;
};

template <class Job, Job (*make)(const Napi::CallbackInfo&)>
Napi::Value QuantizeAsync(const Napi::CallbackInfo& info) {
  const KernelFns* k = kernel_of(info.Env(), info[0]);
  const Job j = make(info);
  auto* w = new QuantizeWorker<Job>(info.Env(), k, j, info);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value DequantizeV2(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 12) throw Napi::TypeError::New(env, "arrowquant native: dequantizeV2 takes 12 arguments");
  const KernelFns* k = kernel_of(env, info[0]);
  DequantV2Job j;
  j.packed = data_of(env, info[1]);
  j.groupParams = data_of(env, info[2]);
  j.superScales = reinterpret_cast<const uint16_t*>(data_of(env, info[3]));
  j.superOffsets = reinterpret_cast<const uint16_t*>(data_of(env, info[4]));
  j.firstGroup = int_of(info[5]);
  j.rows = int_of(info[6]);
  j.cols = int_of(info[7]);
  j.bits = (int)int_of(info[8]);
  j.groupSize = (int)int_of(info[9]);
  j.colScale = info[10].IsNull() || info[10].IsUndefined() ? nullptr : reinterpret_cast<const float*>(data_of(env, info[10]));
  j.out = reinterpret_cast<float*>(data_of(env, info[11]));
  k->dequantizeV2(j);
  return env.Undefined();
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 10) throw Napi::TypeError::New(env, "arrowquant native: dequantize takes 10 arguments");
  const KernelFns* k = kernel_of(env, info[0]);
  DequantJob j;
  j.packed = data_of(env, info[1]);
  j.scales = reinterpret_cast<const uint16_t*>(data_of(env, info[2]));
  j.zeroPoints = reinterpret_cast<const uint16_t*>(data_of(env, info[3]));
  j.rows = int_of(info[4]);
  j.cols = int_of(info[5]);
  j.bits = (int)int_of(info[6]);
  j.groupSize = (int)int_of(info[7]);
  j.colScale = info[8].IsNull() || info[8].IsUndefined() ? nullptr : reinterpret_cast<const float*>(data_of(env, info[8]));
  j.out = reinterpret_cast<float*>(data_of(env, info[9]));
  k->dequantize(j);
  return env.Undefined();
}

Napi::Value ColumnAbsMax(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 6) throw Napi::TypeError::New(env, "arrowquant native: columnAbsMax takes 6 arguments");
  const KernelFns* k = kernel_of(env, info[0]);
  ColumnAbsMaxJob j;
  j.src = data_of(env, info[1]);
  j.dtype = (int)int_of(info[2]);
  j.rows = int_of(info[3]);
  j.cols = int_of(info[4]);
  j.out = reinterpret_cast<float*>(data_of(env, info[5]));
  k->columnAbsMax(j);
  return env.Undefined();
}

Napi::Value Memcpy(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  size_t dstLen = 0, srcLen = 0;
  uint8_t* dst = data_of(env, info[0], &dstLen);
  const uint8_t* src = data_of(env, info[1], &srcLen);
  const size_t n = srcLen < dstLen ? srcLen : dstLen;
  if (n) std::memcpy(dst, src, n);
  return Napi::Number::New(env, (double)n);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Array variants = Napi::Array::New(env);
  for (int i = 0; i < variant_count(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", variant_at(i).fns->name);
    o.Set("supported", variant_at(i).supported);
    variants.Set((uint32_t)i, o);
  }
  exports.Set("variants", variants);
  exports.Set("quantizeSync", Napi::Function::New(env, QuantizeSync, "quantizeSync"));
  exports.Set("quantize", Napi::Function::New(env, QuantizeAsync<QuantJob, quant_job>, "quantize"));
  exports.Set("quantizeV2Sync", Napi::Function::New(env, QuantizeV2Sync, "quantizeV2Sync"));
  exports.Set("quantizeV2", Napi::Function::New(env, QuantizeAsync<QuantV2Job, quant_v2_job>, "quantizeV2"));
  exports.Set("dequantizeV2", Napi::Function::New(env, DequantizeV2, "dequantizeV2"));
  exports.Set("dequantize", Napi::Function::New(env, Dequantize, "dequantize"));
  exports.Set("columnAbsMax", Napi::Function::New(env, ColumnAbsMax, "columnAbsMax"));
  exports.Set("memcpy", Napi::Function::New(env, Memcpy, "memcpy"));
  return exports;
}

}  // namespace

NODE_API_MODULE(arrowquant_native, Init)
