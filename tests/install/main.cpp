#include <thea/thea.hpp>
using namespace thea;

int main() {
  auto X = fmatrix("X");
  auto Y = fmatrix("Y");
  auto w = shared(random_normal({784, 10}, /*mean=*/0.0, /*stddev=*/0.01, /*seed=*/42), "w");
  auto py_x = nnet::softmax(dot(X, w));
  auto y_pred = argmax(py_x, /*axis=*/1);
  auto cost = mean(nnet::categorical_crossentropy(py_x, Y));
  auto g = grad(cost, w);
  auto train = function({X, Y}, {cost}, {{w, w - g * 0.05}});
  auto predict = function({X}, {y_pred});

  Tensor xb = Tensor::zeros({128, 784}, Dtype::Float32);  // host ndarray
  Tensor yb = Tensor::zeros({128, 10}, Dtype::Float32);
  float c = train({xb, yb})[0].item<float>();
  Tensor labels = predict({xb})[0];  // int64, shape (128)
  Tensor w_now = w.get_value();
}
