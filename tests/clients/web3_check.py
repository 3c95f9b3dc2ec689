"""web3.py against a running node: balance, nonce, a signed transfer and its receipt.
Usage: python3 web3_check.py <http url>"""
import sys

from eth_account import Account
from web3 import Web3

KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # dev account 3
url = sys.argv[1]
w3 = Web3(Web3.HTTPProvider(url))
assert w3.is_connected(), "not connected"
assert w3.eth.chain_id == 31337, w3.eth.chain_id
sender = Account.from_key(KEY)
balance = w3.eth.get_balance(sender.address)
assert balance > 10**21, balance
nonce = w3.eth.get_transaction_count(sender.address)
to = "0x4444444444444444444444444444444444444444"
tx = {
    "chainId": 31337,
    "nonce": nonce,
    "to": to,
    "value": 4242,
    "gas": 21000,
    "maxFeePerGas": w3.eth.gas_price * 2,
    "maxPriorityFeePerGas": w3.eth.max_priority_fee,
}
signed = sender.sign_transaction(tx)
tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
assert receipt["status"] == 1, receipt
assert receipt["gasUsed"] == 21000, receipt
assert w3.eth.get_transaction_count(sender.address) == nonce + 1
assert w3.eth.get_balance(to) >= 4242
block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
assert block["transactions"][receipt["transactionIndex"]]["hash"] == tx_hash
print("web3.py: balance, nonce, transfer and receipt OK")
