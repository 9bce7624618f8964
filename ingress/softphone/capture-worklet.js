// Microphone capture on the audio thread: float samples → 20 ms frames of PCM16, posted to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frame = options.processorOptions.frameSamples;
    this.buf = new Int16Array(this.frame);
    this.n = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const s = Math.max(-1, Math.min(1, channel[i]));
        this.buf[this.n++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.n === this.frame) {
          this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
          this.buf = new Int16Array(this.frame);
          this.n = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
