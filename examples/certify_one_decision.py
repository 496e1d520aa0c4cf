"""Certify one decision of the bundled MNIST CNN: is its class kept on a whole L-infinity ball?

Run: python examples/certify_one_decision.py   (a few seconds; bundled data only)
"""
from smtverify import load_onnx, resources
from smtverify.verify import Settings, Verifier, robustness_property

network = load_onnx(resources.model_path("mnist_cnn"))
images = resources.test_images("mnist_cnn")
x, label = images.images[0], int(images.labels[0])

# SAFE: proven on every real point of the ball. UNSAFE: a counterexample, confirmed by
# onnxruntime before it is reported. UNKNOWN / TIMEOUT: not decided within the time.
verifier = Verifier(network, Settings(timeout=30))
for eps in (0.01, 0.2):
    result = verifier.verify(robustness_property(network, x, label, eps=eps))
    print(f"eps {eps}: {result.verdict.value} in {result.seconds:.1f} s")
    print(f"  guarantee: {result.guarantee}")
    if result.counterexample is not None:
        print(f"  class {label} became {int(result.counterexample.output.argmax())}")
