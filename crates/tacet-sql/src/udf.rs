//! Scalar functions analysts want next to the outcomes.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// `burn_rate(bad, total, slo)` or `error_budget_left(bad, total, slo)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BudgetFn {
    name: &'static str,
    signature: Signature,
    /// `error_budget_left` rather than `burn_rate`.
    left: bool,
}

impl BudgetFn {
    fn new(name: &'static str, left: bool) -> Self {
        Self {
            name,
            // Any numeric arguments: counts are integers, the SLO a float.
            signature: Signature::uniform(3, vec![DataType::Float64], Volatility::Immutable),
            left,
        }
    }
}

/// The burn rate of `bad` out of `total` against `slo`: (bad/total)/(1-slo).
/// NULL when `total` is 0 or `slo` is not below 1.
pub fn burn_rate(bad: f64, total: f64, slo: f64) -> Option<f64> {
    (total > 0.0 && slo < 1.0).then(|| (bad / total) / (1.0 - slo))
}

impl ScalarUDFImpl for BudgetFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cast = |a: &ArrayRef| datafusion::arrow::compute::cast(a, &DataType::Float64);
        let (bad, total, slo) = (cast(&arrays[0])?, cast(&arrays[1])?, cast(&arrays[2])?);
        let (bad, total, slo) = (
            bad.as_primitive::<Float64Type>(),
            total.as_primitive::<Float64Type>(),
            slo.as_primitive::<Float64Type>(),
        );
        let out: Float64Array = (0..bad.len())
            .map(|i| {
                if bad.is_null(i) || total.is_null(i) || slo.is_null(i) {
                    return None;
                }
                burn_rate(bad.value(i), total.value(i), slo.value(i)).map(|b| if self.left { 1.0 - b } else { b })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The UDFs to register.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(BudgetFn::new("burn_rate", false)),
        ScalarUDF::from(BudgetFn::new("error_budget_left", true)),
    ]
}

use datafusion::arrow::array::Array;
